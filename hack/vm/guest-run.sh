#!/usr/bin/env bash
# Runs inside the VM (as the crius-vm-tests.service oneshot, systemd is PID 1). Reads the job the
# host wrote into the results share, runs each test binary and writes its output, a summary and
# the overall exit status back into the share. The unit powers the VM off when this ends.
set -uo pipefail
out=/crius-vm/out
# shellcheck source=/dev/null
source "$out/job.env"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1
export CRIUS_TEST_CGROUP_DRIVER
[[ -n ${CRIUS_TEST_SYSTEMD:-} ]] && export CRIUS_TEST_SYSTEMD
export CARGO_MANIFEST_DIR=$REPO

{
  echo "kernel: $(uname -r)"
  echo "pid1: $(cat /proc/1/comm)"
  echo "cgroup fs: $(stat -fc %T /sys/fs/cgroup)"
  [[ -e /sys/fs/cgroup/unified ]] && echo "hybrid: /sys/fs/cgroup/unified present"
  echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || ls /sys/fs/cgroup | tr '\n' ' ')"
  echo "systemd: $(systemctl --version | head -1)"
  echo "system state: $(systemctl is-system-running 2>&1)"
  echo "cgroup driver for criusd: ${CRIUS_TEST_CGROUP_DRIVER}"
} >"$out/env.txt" 2>&1

# Every daemon a test starts copies its criusd.log and its monitors' logs here when dropped
# (crius-testkit's keep_logs); those of failed tests go back to the host.
kept=/tmp/crius-kept-logs
export CRIUS_TEST_KEEP_LOGS

# keep_failed NAME LOG DEST: copies the kept logs of LOG's failed tests to the share and
# records what the system looks like after them (a process that outlived its test, a frozen
# cgroup, a unit left behind).
keep_failed() {
  local name=$1 log=$2 dest=$3 t
  while read -r t; do
    [[ -d $kept/$name/$t ]] || continue
    mkdir -p "$dest/$t"
    cp -r "$kept/$name/$t/." "$dest/$t/"
  done < <(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log")
  {
    echo "### processes (not kernel threads) and their cgroups"
    ps -eo pid,ppid,stat,wchan:24,etimes,args --no-headers | awk '$1 != 2 && $2 != 2' |
      head -n 100 | while read -r pid rest; do
        echo "$pid $rest"
        ((pid == 1 || pid == $$)) || sed 's/^/    /' "/proc/$pid/cgroup" 2>/dev/null
      done
    echo "### v1 freezer cgroups not THAWED"
    find /sys/fs/cgroup/freezer -name freezer.state 2>/dev/null |
      while read -r f; do
        s=$(cat "$f" 2>/dev/null)
        [[ $s == THAWED ]] || echo "$s ${f%/freezer.state}"
      done
    echo "### scopes and slices"
    systemctl list-units --all --no-pager --no-legend --type=scope,slice 2>&1 | head -n 100
  } >"$out/$name.state.txt" 2>&1
}

# A debugging hook (VM_GUEST_SCRIPT on the host).
if [[ -x $out/guest-script.sh ]]; then
  (cd "$out" && timeout --kill-after=10 "$PER_BINARY_TIMEOUT" ./guest-script.sh) \
    >"$out/guest-script.log" 2>&1 </dev/null
fi

rc=0
: >"$out/summary.txt"
cd "$REPO" || exit 1
# job.tests: one line per binary: NAME PATH [FILTER ARGS...]
while read -r name bin args; do
  [[ -z $name || $name == \#* ]] && continue
  start=$(date +%s)
  threads=(--test-threads="$TEST_THREADS")
  [[ $args == *--test-threads* ]] && threads=()
  rm -rf "${kept:?}/$name"
  CRIUS_TEST_KEEP_LOGS=$kept/$name
  # shellcheck disable=SC2086
  timeout --kill-after=10 "$PER_BINARY_TIMEOUT" "$bin" "${threads[@]}" $args \
    >"$out/$name.log" 2>&1 </dev/null
  r=$?
  ((r == 0)) || keep_failed "$name" "$out/$name.log" "$out/logs/$name"
  echo "$name exit=$r seconds=$(($(date +%s) - start))" >>"$out/summary.txt"
  if ((r != 0 && RETRY_FAILED)); then
    # TCG on a shared 2-core host is slow enough that a test's own few-second timeouts
    # sometimes expire: the failed tests run once more, alone; the first output is kept and
    # the retry is reported, so a test that only passes on retry is visible.
    mv "$out/$name.log" "$out/$name.log.first-try"
    [[ -d $out/logs/$name ]] && mv "$out/logs/$name" "$out/logs/$name.first-try"
    mv "$out/$name.state.txt" "$out/$name.state.txt.first-try" 2>/dev/null
    rm -rf "${kept:?}/$name"
    failed_tests=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$out/$name.log.first-try" | tr '\n' ' ')
    failed_tests=${failed_tests% }
    retry_args=(--test-threads=1 --exact)
    if [[ -z $failed_tests ]]; then
      # Crashed or timed out before naming a failure: the whole binary again.
      # shellcheck disable=SC2206
      retry_args=($args)
      [[ $args == *--test-threads* ]] || retry_args+=(--test-threads=1)
    fi
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout --kill-after=10 "$PER_BINARY_TIMEOUT" "$bin" "${retry_args[@]}" $failed_tests \
      >"$out/$name.log" 2>&1 </dev/null
    r=$?
    ((r == 0)) || keep_failed "$name" "$out/$name.log" "$out/logs/$name"
    echo "$name RETRIED (${failed_tests:-whole binary}) exit=$r seconds=$(($(date +%s) - start))" \
      >>"$out/summary.txt"
  fi
  ((r == 0)) || rc=1
done <"$out/job.tests"
# The kernel's view (OOM kills, hung tasks) for failures that the test output cannot explain.
dmesg >"$out/dmesg.txt" 2>&1
echo "$rc" >"$out/rc"
sync
exit 0
