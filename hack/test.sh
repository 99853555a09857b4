#!/usr/bin/env bash
# Builds and tests the whole workspace, then checks that the tests left no crius mounts or
# processes behind. Run from anywhere as root: `bash hack/test.sh [extra cargo test args]`.
#
# Environment (all optional, existing values are respected):
#   SKIP_DEPS=1          do not run hack/install-deps.sh
#   RUST_TEST_THREADS    test threads per binary (default 2)
#   CARGO_SCOPE          what to build/test (default "--workspace"; e.g. "-p crius-testkit")
#   CARGO_TARGET_DIR, RUSTFLAGS, CARGO_* as usual
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

if [[ ${SKIP_DEPS:-0} != 1 ]]; then
  bash hack/install-deps.sh </dev/null
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: warning: not root; tests that need root will fail" >&2
fi
if [[ ${CI:-} == true ]]; then
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
fi
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

log=$(mktemp -t crius-test-XXXXXX.log)
trap 'rm -f "$log"' EXIT

step() { printf '\n==> %s\n' "$*"; }

read -r -a scope <<<"${CARGO_SCOPE:---workspace}"

step "cargo build ${scope[*]} --all-targets"
cargo build "${scope[@]}" --all-targets </dev/null

step "lint: cargo fmt --check, cargo clippy -D warnings"
lint_rc=0
cargo fmt --all -- --check </dev/null || lint_rc=1
cargo clippy "${scope[@]}" --all-targets </dev/null -- -D warnings || lint_rc=1

step "cargo test ${scope[*]} (test threads: ${RUST_TEST_THREADS:-2})"
set +e
cargo test --no-fail-fast "${scope[@]}" "$@" -- --test-threads="${RUST_TEST_THREADS:-2}" </dev/null 2>&1 | tee "$log"
test_rc=${PIPESTATUS[0]}
set -e

step "leak checks"
leaks=0
mounts=$(awk '$5 ~ /crius/ {print $5}' /proc/self/mountinfo || true)
if [[ -n $mounts ]]; then
  echo "LEAK: crius mounts left behind:"
  echo "$mounts" | sed 's/^/  /'
  leaks=1
fi
procs=$(pgrep -a -f 'crius-testkit-(daemon|registry)-' || true)
if [[ -n $procs ]]; then
  echo "LEAK: processes of test daemons/registries still running:"
  echo "$procs" | sed 's/^/  /'
  leaks=1
fi
tables=$(nft list tables 2>/dev/null | grep -E 'crius-(nat|portmap|test)' || true)
if [[ -n $tables ]]; then
  echo "LEAK: nftables tables of crius's plugins left (a pod's NAT rules were not removed):"
  echo "$tables" | sed 's/^/  /'
  leaks=1
fi
links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
  grep -E '^(crt[0-9a-f]{4}|crbr[0-9a-f]+|crbench0|criust|crius-cni-test)' || true)
if [[ -n $links ]]; then
  echo "LEAK: test bridges left:"
  echo "$links" | sed 's/^/  /'
  leaks=1
fi
# Debian's reference portmap keeps its CNI-HOSTPORT-* scaffolding after its last pod: not a
# leak of ours, but the host is left as it was found.
bash hack/clean-cni-iptables.sh
dirs=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'crius-testkit-*' 2>/dev/null || true)
if [[ -n $dirs ]]; then
  echo "note: temp dirs left behind (kept on purpose when unmounting failed, or from killed runs):"
  echo "$dirs" | sed 's/^/  /'
fi
((leaks == 0)) && echo "no leaked mounts, processes, nft tables or test bridges"

step "summary"
read -r passed failed ignored < <(awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i-1)
      if ($(i) ~ /^failed;?$/) f += $(i-1)
      if ($(i) ~ /^ignored;?$/) g += $(i-1)
    }
  }
  END { printf "%d %d %d\n", p, f, g }' "$log")
echo "tests: ${passed} passed, ${failed} failed, ${ignored} ignored (cargo test exit ${test_rc})"
if ((failed > 0)); then
  echo "failed tests:"
  grep -E '^test .* FAILED$' "$log" | sed 's/^/  /' || true
fi
echo "repo: ${repo}"

((lint_rc == 0)) || echo "lint failed: see the fmt/clippy output above"
if ((test_rc != 0 || leaks != 0 || lint_rc != 0)); then
  echo "RESULT: FAIL"
  exit 1
fi
echo "RESULT: OK"
