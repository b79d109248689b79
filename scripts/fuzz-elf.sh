#!/usr/bin/env bash
# Fuzz the ELF/DWARF readers (Symbolize's SymbolFile: loading and lookups) with libFuzzer.
# Usage: scripts/fuzz-elf.sh [SECONDS] [libFuzzer options...]   (default 60 s)
# Crashing inputs are written as crash-* into fuzz/SymbolFileFuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
seconds="${1:-60}"
shift || true
root="$PWD"

# Seeds: the bundled guests (32- and 64-bit, with DWARF) and a small gcc-built program
# (with and without DWARF), all kept small so that mutations stay fast.
corpus="$root/fuzz/SymbolFileFuzz/corpus"
mkdir -p "$corpus" "$root/fuzz/SymbolFileFuzz/artifacts"
if [ -z "$(ls -A "$corpus")" ]; then
    make -s -C guest >/dev/null
    for g in guest32.elf guest64.elf; do cp "guest/build/$g" "$corpus/seed-$g"; done
    seeds="$(mktemp -d)"
    printf 'static int twice(int x) { return 2 * x; }\nint main(int argc, char **argv) { return twice(argc); }\n' >"$seeds/a.c"
    gcc -g -O1 -o "$corpus/seed-gcc-g" "$seeds/a.c"
    gcc -O1 -s -o "$corpus/seed-gcc-stripped" "$seeds/a.c"
    gcc -g -O2 -c -o "$corpus/seed-gcc-object.o" "$seeds/a.c"
    rm -rf "$seeds"
fi

cd fuzz/SymbolFileFuzz
# -sanitize=fuzzer on every Swift module (not only the executable) so that libFuzzer sees
# coverage of the readers themselves; C code gets the matching coverage flags.
flags=(-c release --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer -Xcc -fsanitize=fuzzer-no-link)
swift build "${flags[@]}" 2>&1 | grep -E 'error|warning: ' >&2 || true
# Swift's own crash backtracer fights the address sanitizer over the report: off.
export SWIFT_BACKTRACE=enable=no
bin="$(swift build "${flags[@]}" --show-bin-path)/SymbolFileFuzz"
exec "$bin" -max_total_time="$seconds" -max_len=262144 -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="$root/fuzz/SymbolFileFuzz/artifacts/" "$@" "$corpus"
