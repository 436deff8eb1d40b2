#!/usr/bin/env bash
# Fuzz the payload validator, the setup-script reader and the settings merge, each for a
# bounded time (default 60 seconds a target), on the nightly toolchain with cargo-fuzz.
# New interesting inputs are added to fuzz/corpus/<target>/, which is kept in the repository,
# and the corpus is then minimised (cargo fuzz cmin).
# Not part of CI: run it by hand, then commit what it added to the corpora.
#
# Usage: scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET…]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(payload script settings_merge)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || {
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
}

for target in "${targets[@]}"; do
  echo "== $target: $seconds seconds" >&2
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 |
    grep -E '^(INFO: Running|#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+== ERROR|SUMMARY)' || true
  if [ -d "artifacts/$target" ] && [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz.sh: $target found a crash; see fuzz/artifacts/$target/" >&2
    exit 1
  fi
  # Keep only the inputs that add coverage, so that the corpus in the repository stays small.
  cargo +nightly fuzz cmin "$target" "corpus/$target" >/dev/null 2>&1
  echo "corpus/$target: $(find "corpus/$target" -type f | wc -l) inputs after minimising" >&2
done
