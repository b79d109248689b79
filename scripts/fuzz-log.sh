#!/usr/bin/env bash
# Fuzz the replay-log reader with libFuzzer (swift build --sanitize=fuzzer).
# Usage: scripts/fuzz-log.sh [SECONDS] [libFuzzer options...]   (default 60; a long run: scripts/fuzz-log.sh 3600)
# Crashing inputs are written as crash-* into fuzz/ReplayLogFuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
seconds="${1:-60}"
shift || true
root="$PWD"

# Seeds: small valid logs from the writer (1 and 3 vCPUs, tiny and larger branch entries),
# made once by the ordinary (debug) build of tt: no release build just for three seeds.
corpus="$root/fuzz/ReplayLogFuzz/corpus"
mkdir -p "$corpus" "$root/fuzz/ReplayLogFuzz/artifacts"
# Each input is a mode byte (odd: the harness re-checksums the log) followed by the log.
if [ -z "$(ls -A "$corpus")" ]; then
    swift build --product tt 2>&1 | grep -E 'error' >&2 || true
    tt="$(swift build --show-bin-path)/tt"
    seeds="$(mktemp -d)"
    "$tt" log generate --size 2K --vcpus 1 --records-per-entry 1 "$seeds/1"
    "$tt" log generate --size 6K --vcpus 3 --records-per-entry 3 "$seeds/2"
    "$tt" log generate --size 12K --vcpus 2 --records-per-entry 40 "$seeds/3"
    for s in 1 2 3; do
        { printf '\x00'; cat "$seeds/$s"; } >"$corpus/seed$s-plain"
        { printf '\x01'; cat "$seeds/$s"; } >"$corpus/seed$s-rechecksummed"
    done
    rm -rf "$seeds"
fi

cd fuzz/ReplayLogFuzz
# -sanitize=fuzzer on every Swift module (not only the executable) so that libFuzzer sees
# coverage of the reader itself; C code gets the matching coverage flags.
flags=(-c release --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer -Xcc -fsanitize=fuzzer-no-link)
swift build "${flags[@]}" 2>&1 | grep -E 'error|warning: ' >&2 || true
# Swift's own crash backtracer fights the address sanitizer over the report: off.
export SWIFT_BACKTRACE=enable=no
bin="$(swift build "${flags[@]}" --show-bin-path)/ReplayLogFuzz"
exec "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -artifact_prefix="$root/fuzz/ReplayLogFuzz/artifacts/" "$@" "$corpus"
