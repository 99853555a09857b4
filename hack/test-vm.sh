#!/usr/bin/env bash
# Runs crius's cgroup-related integration tests where this host cannot: inside a qemu VM (TCG)
# booting Debian's kernel with systemd as PID 1, on cgroup v2 and on cgroup v1 (hybrid).
#
# The VM's root is the host's own root shared read-only over virtio-9p with a tmpfs overlay for
# writes (hack/vm/init), so the test binaries, criusd, runc/crun, the CNI plugins and
# docker-registry are the host's, at the same paths. Results come back through a second 9p share.
#
# Stages:
#   a  cgroup v2,          cgroupfs driver
#   b  cgroup v2,          systemd driver
#   c  cgroup v1 (hybrid), systemd driver
# All three run by default (about 3 minutes each on a shared 2-core host).
#
# Usage: bash hack/test-vm.sh [--long] [--stages a,b,c] [--no-build]
#   default (CI)  a short subset per stage (see short_tests below)
#   --long        every test of tests/{containers,pods,stats,container_config}.rs in every stage
#   --no-build    skip building criusd and its helpers (the test binaries are still checked)
# Environment (optional):
#   VM_MEM (3072 MiB), VM_SMP (2), VM_BOOT_TIMEOUT (300 s until the tests start),
#   VM_STAGE_TIMEOUT (seconds per stage; default 900, 2400 with --long),
#   VM_KEEP=1 keeps the work dir (console logs) for debugging,
#   VM_TESTS="containers;stats stats_of_known_loads_runc" replaces every stage's test list
#   (entries split by ';': a test binary's name, then its filter and libtest flags),
#   VM_GUEST_SCRIPT=FILE runs FILE in the guest before the tests (as root, in the results
#   share's directory; its output lands in guest-script.log there: keep it with VM_KEEP=1),
#   VM_RETRY=0 reports a failure at once (default: failed tests run once more, alone, and the
#   retry is shown in the summary: TCG on a loaded host can outrun a test's own timeouts).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

long=0
stages=a,b,c
build=1
while (($#)); do
  case $1 in
  --long) long=1 ;;
  --stages) stages=$2; shift ;;
  --stages=*) stages=${1#--stages=} ;;
  --no-build) build=0 ;;
  -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
  *) echo "test-vm.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

mem=${VM_MEM:-3072}
smp=${VM_SMP:-2}
boot_timeout=${VM_BOOT_TIMEOUT:-300}
if ((long)); then
  stage_timeout=${VM_STAGE_TIMEOUT:-2400}
else
  stage_timeout=${VM_STAGE_TIMEOUT:-900}
fi

step() { printf '\n==> %s\n' "$*"; }
die() { echo "test-vm.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (9p passthrough, tests need root)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run hack/install-deps.sh"

# Debian's kernel (linux-image-amd64) with its modules; the host's running kernel is irrelevant.
kernel=
for k in $(ls -1v /boot/vmlinuz-*-amd64 2>/dev/null); do
  v=${k#/boot/vmlinuz-}
  [[ -d /lib/modules/$v/kernel ]] && kernel=$k kver=$v
done
[[ -n $kernel ]] || die "no /boot/vmlinuz-*-amd64 with modules: install linux-image-amd64"

# The tests each stage runs: "NAME FILTER ARGS" (empty filter: the whole binary).
# short: the cgroup-touching tests that matter most, kept small for CI's time budget.
short_tests_a=(
  "cgroups --test-threads=1"
  "stats --test-threads=1"
  "containers"
)
short_tests_bc=(
  "cgroups --test-threads=1"
  "stats --test-threads=1"
  "containers"
)
long_tests=(
  "cgroups --test-threads=1"
  "stats --test-threads=1"
  "containers"
  "pods"
  "container_config --test-threads=1"
)

if ((build)); then
  step "building criusd, its helpers and the test binaries"
  nice -n 10 cargo build -p criusd -p crius-monitor -p crius-init --bins </dev/null
fi
# The test binaries' paths, from cargo (which rebuilds them when the sources changed).
declare -A test_bin
while IFS=$'\t' read -r name path; do
  test_bin[$name]=$path
done < <(nice -n 10 cargo test -p criusd --no-run --message-format=json \
  --test cgroups --test stats --test containers --test pods --test container_config </dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .executable != null and
    (.target.kind | index("test"))) | [.target.name, .executable] | @tsv')
for t in cgroups stats containers pods container_config; do
  [[ -x ${test_bin[$t]:-} ]] || die "test binary for tests/$t.rs not found (cargo test --no-run failed?)"
done

work=$(mktemp -d /tmp/crius-vm-XXXXXX)
qemu_pid=
cleanup() {
  if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [[ ${VM_KEEP:-0} == 1 ]]; then
    echo "test-vm.sh: kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "initramfs for $kernel"
ird=$work/initrd
mkdir -p "$ird"/{bin,modules,proc,sys,dev,lower,rw,newroot}
cp /bin/busybox "$ird/bin/busybox"
# The initramfs has no libc: busybox must be the static one.
if ldd "$ird/bin/busybox" >/dev/null 2>&1; then
  die "/bin/busybox is dynamically linked: install busybox-static"
fi
# virtio-pci, 9p over virtio and overlayfs with their dependencies, in load order.
: >"$ird/modules.order"
while read -r _ ko _; do
  b=$(basename "$ko")
  grep -qx "$b" "$ird/modules.order" && continue
  cp "$ko" "$ird/modules/$b"
  echo "$b" >>"$ird/modules.order"
done < <(for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -S "$kver" --show-depends "$m"
done | grep '^insmod ')
install -m 0755 hack/vm/init "$ird/init"
cp hack/vm/crius-vm.target hack/vm/crius-vm-tests.service "$ird/"
(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"

# run_stage NAME UNIFIED(1|0) DRIVER TESTS...
run_stage() {
  local name=$1 unified=$2 driver=$3
  shift 3
  local out=$work/out-$name
  mkdir -p "$out"
  cp hack/vm/guest-run.sh "$out/"
  [[ -n ${VM_GUEST_SCRIPT:-} ]] && install -m 0755 "$VM_GUEST_SCRIPT" "$out/guest-script.sh"
  {
    echo "REPO=$repo"
    echo "CRIUS_TEST_CGROUP_DRIVER=$driver"
    # tests/cgroups.rs runs its systemd variants only when asked to (systemd is PID 1 here).
    [[ $driver == systemd ]] && echo "CRIUS_TEST_SYSTEMD=1"
    echo "TEST_THREADS=2"
    echo "PER_BINARY_TIMEOUT=$((stage_timeout - 60))"
    echo "RETRY_FAILED=${VM_RETRY:-1}"
  } >"$out/job.env"
  : >"$out/job.tests"
  local t
  for t in "$@"; do
    read -r tname targs <<<"$t"
    echo "$tname ${test_bin[$tname]} $targs" >>"$out/job.tests"
  done

  local cmdline="console=ttyS0 rdinit=/init panic=-1 loglevel=4 systemd.unit=crius-vm.target"
  cmdline+=" systemd.unified_cgroup_hierarchy=$unified systemd.show_status=error"
  local start=$SECONDS
  nice -n 10 qemu-system-x86_64 \
    -machine pc,accel=tcg -cpu max -smp "$smp" -m "$mem" \
    -kernel "$kernel" -initrd "$work/initrd.gz" -append "$cmdline" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -virtfs "local,path=$out,mount_tag=criusout,security_model=passthrough,multidevs=remap" \
    -display none -monitor none -serial "file:$out/console.log" -nic none -no-reboot \
    </dev/null >"$out/qemu.log" 2>&1 &
  qemu_pid=$!
  local booted=0 timed_out=0
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if ((!booted)) && [[ -s $out/env.txt ]]; then
      booted=1
      echo "stage $name: tests started $((SECONDS - start)) s after qemu started"
    fi
    if ((!booted && SECONDS - start > boot_timeout)); then
      echo "stage $name: VM did not start the tests within ${boot_timeout}s; killing it"
      timed_out=1
      break
    fi
    if ((SECONDS - start > stage_timeout)); then
      echo "stage $name: still running after ${stage_timeout}s; killing the VM"
      timed_out=1
      break
    fi
    sleep 2
  done
  kill -KILL "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  local secs=$((SECONDS - start))
  stage_secs[$name]=$secs

  [[ -f $out/env.txt ]] && sed 's/^/  /' "$out/env.txt"
  local f
  for f in "$out"/*.log; do
    case $(basename "$f") in console.log | qemu.log) continue ;; esac
    echo "--- stage $name: $(basename "$f" .log)"
    grep -E '^test .* (FAILED|ok|ignored)$|^test result:|^failures:|panicked at' "$f" |
      grep -vE ' ok$' | sed 's/^/  /' || true
  done
  [[ -f $out/summary.txt ]] && sed 's/^/  /' "$out/summary.txt"
  if grep -q RETRIED "$out/summary.txt" 2>/dev/null; then
    echo "stage $name: NOTE: some tests failed on the first try (see RETRIED above)"
  fi
  local rc
  rc=$(cat "$out/rc" 2>/dev/null || echo missing)
  if ((timed_out)) || [[ $rc != 0 ]]; then
    stage_result[$name]="FAIL (rc=$rc, ${secs}s)"
    echo "stage $name: FAIL after ${secs}s; last console lines:"
    tail -n 30 "$out/console.log" 2>/dev/null | sed 's/^/  | /'
    # Keep the full test output where a CI log can show it.
    for f in "$out"/*.log; do
      case $(basename "$f") in console.log | qemu.log) continue ;; esac
      if ! grep -q '^test result: ok' "$f"; then
        echo "--- stage $name: full output of $(basename "$f" .log) (last 200 lines)"
        tail -n 200 "$f" | sed 's/^/  | /'
      fi
    done
    # What the guest saw after the failed tests, and the daemon's and the monitors' logs of
    # each failed test (crius-testkit keeps them, hack/vm/guest-run.sh brings them back).
    for f in "$out"/*.state.txt; do
      [[ -f $f ]] || continue
      echo "--- stage $name: system state after $(basename "$f" .state.txt)"
      sed 's/^/  | /' "$f"
    done
    if [[ -d $out/logs ]]; then
      while read -r f; do
        local n=80
        [[ $(basename "$f") == criusd.log ]] || n=40
        echo "--- stage $name: ${f#"$out"/logs/} (last $n lines)"
        # Without the colours of tracing's output.
        tail -n "$n" "$f" | sed 's/\x1b\[[0-9;]*m//g; s/^/  | /'
      done < <(find "$out/logs" -path '*.first-try' -prune -o -type f -name '*.log' -print | sort)
    fi
    return 1
  fi
  stage_result[$name]="OK (${secs}s)"
  echo "stage $name: OK in ${secs}s"
}

if [[ -n ${VM_TESTS:-} ]]; then
  IFS=';' read -r -a custom_tests <<<"$VM_TESTS"
fi
pick_tests() { # pick_tests SHORT_ARRAY_NAME: sets stage_tests
  if [[ -n ${VM_TESTS:-} ]]; then
    stage_tests=("${custom_tests[@]}")
  elif ((long)); then
    stage_tests=("${long_tests[@]}")
  else
    local -n short=$1
    stage_tests=("${short[@]}")
  fi
}

declare -A stage_secs stage_result
failed=0
IFS=, read -r -a wanted <<<"$stages"
for s in "${wanted[@]}"; do
  case $s in
  a)
    step "stage a: cgroup v2, cgroupfs driver"
    pick_tests short_tests_a
    run_stage a 1 cgroupfs "${stage_tests[@]}" || failed=1
    ;;
  b)
    step "stage b: cgroup v2, systemd driver"
    pick_tests short_tests_bc
    run_stage b 1 systemd "${stage_tests[@]}" || failed=1
    ;;
  c)
    step "stage c: cgroup v1 (hybrid), systemd driver"
    pick_tests short_tests_bc
    run_stage c 0 systemd "${stage_tests[@]}" || failed=1
    ;;
  *) die "unknown stage $s (a, b or c)" ;;
  esac
done

step "summary"
for s in "${wanted[@]}"; do
  echo "stage $s: ${stage_result[$s]:-not run}"
done
# One closing line over every stage, in the plain form CI reads.
read -r n_passed n_failed < <(cat "$work"/out-*/*.log 2>/dev/null | awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i-1)
      if ($(i) ~ /^failed;?$/) f += $(i-1)
    }
  }
  END { printf "%d %d\n", p, f }')
echo "vm: ${n_passed} passed, ${n_failed} failed"
if ((failed)); then
  echo "VM RESULT: FAIL"
  exit 1
fi
echo "VM RESULT: OK"
