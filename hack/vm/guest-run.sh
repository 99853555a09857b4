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

rc=0
: >"$out/summary.txt"
cd "$REPO" || exit 1
# job.tests: one line per binary: NAME PATH [FILTER ARGS...]
while read -r name bin args; do
  [[ -z $name || $name == \#* ]] && continue
  start=$(date +%s)
  threads=(--test-threads="$TEST_THREADS")
  [[ $args == *--test-threads* ]] && threads=()
  # shellcheck disable=SC2086
  timeout --kill-after=10 "$PER_BINARY_TIMEOUT" "$bin" "${threads[@]}" $args \
    >"$out/$name.log" 2>&1 </dev/null
  r=$?
  echo "$name exit=$r seconds=$(($(date +%s) - start))" >>"$out/summary.txt"
  if ((r != 0 && RETRY_FAILED)); then
    # TCG on a shared 2-core host is slow enough that a test's own few-second timeouts
    # sometimes expire: the failed tests run once more, alone; the first output is kept and
    # the retry is reported, so a test that only passes on retry is visible.
    mv "$out/$name.log" "$out/$name.log.first-try"
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
