#!/usr/bin/env bash
# Runs signaling's coverage-guided fuzz targets (libFuzzer through cargo-fuzz, on the stable
# toolchain) for a bounded time each: frames (WebSocket bytes -> protocol messages and close
# codes), message (protocol parsing) and token (join-token checking). Installs cargo-fuzz from
# crates.io when it is missing. The seed corpus is signaling/fuzz/corpus/<target>; what a run
# finds new goes to a scratch directory, so the repository's corpus stays small. A crash or a
# failed assertion leaves its input in signaling/fuzz/artifacts/<target>/ and fails the run.
#
#   bash tests/fuzz.sh                 # every target, 20 s each
#   FUZZ_SECONDS=300 bash tests/fuzz.sh message
set -euo pipefail
cd "$(dirname "$0")/../signaling"
seconds=${FUZZ_SECONDS:-20}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames message token)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

# `-s none`: no sanitizer, so no nightly-only `-Z` flags; coverage instrumentation
# (sancov) and libFuzzer work on stable. The code is safe Rust (`unsafe_code` is forbidden),
# so AddressSanitizer would add little; what a target checks is panics and its assertions.
fuzz=(fuzz)
# The instrumented build (about 10 CPU-minutes cold) is kept in the test cache, like the
# control plane, so runs from a fresh clone reuse it; cargo rebuilds what changed.
target_dir=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/fuzz-target
flags=(-s none --fuzz-dir fuzz --target-dir "$target_dir")
cargo +stable "${fuzz[@]}" build "${flags[@]}"
status=0
for target in "${targets[@]}"; do
  scratch=$(mktemp -d)
  echo "fuzzing $target for ${seconds}s"
  if ! cargo +stable "${fuzz[@]}" run "${flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -max_len=70000 -print_final_stats=1 2>"$scratch.log"; then
    tail -n 40 "$scratch.log" >&2
    echo "fuzz target $target FAILED (input saved under signaling/fuzz/artifacts/$target/)" >&2
    status=1
  else
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)" "$scratch.log" | tr '\n' ' '
    echo
    echo "fuzz target $target: ok"
  fi
  rm -rf "$scratch" "$scratch.log"
done
exit "$status"
