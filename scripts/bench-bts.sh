#!/usr/bin/env bash
# Records per second of bts-dump (plain and symbolic) and bts-extract over N (default 10M)
# branch records, each next to a minimal C program doing the same job (scripts/bench/*.c):
#   dump plain      : printf of "N: 0x%08lx -> 0x%08lx" per record
#   dump symbolic   : the same with ELF symbol-table names (libelf, binary search), vs
#                     bts-dump -G (GDB style) and bts-dump (inline style, the default)
#   extract         : read the replay log checking marker/length/CRC-32C/sequence per entry,
#                     write the records in the counter range
# Outputs go to /dev/null (plain and -G outputs are first compared with the C ones: they
# must be identical). Best of 3 runs. Ratio = Swift records/s ÷ C records/s (goal ≥ 1).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
N=${N:-10000000}
RUNS=${RUNS:-3}

work=$(mktemp -d /tmp/bench-bts.XXXXXX)
trap 'rm -rf "$work"' EXIT

swift build -c release --product bts-dump >/dev/null
swift build -c release --product bts-extract >/dev/null
bin=$(swift build -c release --show-bin-path)

gcc -O2 -msse4.2 -o "$work/gen-input" scripts/bench/gen-input.c
gcc -O2 -o "$work/dump" scripts/bench/dump.c -lelf
gcc -O2 -msse4.2 -o "$work/extract" scripts/bench/extract.c

# A symbol file with 3000 functions (DWARF and symbol table) for the symbolic runs.
{
    echo 'void _start(void) { __asm__ volatile("mov $60,%eax; xor %edi,%edi; syscall"); }'
    for i in $(seq 1 3000); do
        echo "__attribute__((noinline)) long f$i(long x) { if (x > $i) return x * $i + (x >> 3); return x ^ $i; }"
    done
} > "$work/funcs.c"
gcc -g -O2 -nostdlib -static -o "$work/funcs" "$work/funcs.c"
nm -S --defined-only "$work/funcs" | "$work/gen-input" "$N" "$work/in.bts" "$work/in.log"

# best CMD...: "wall cpu" seconds of the fastest of RUNS runs (by wall time), stdout to
# /dev/null. CPU (user+sys) is printed too because the machine may be shared: it is the
# steadier figure under load.
best() {
    local best_wall="" best_cpu="" line wall user sys
    for _ in $(seq 1 "$RUNS"); do
        line=$( { TIMEFORMAT='%3R %3U %3S'; time "$@" >/dev/null 2>&1; } 2>&1 )
        read -r wall user sys <<<"$line"
        if [[ -z "$best_wall" ]] || awk -v a="$wall" -v b="$best_wall" 'BEGIN { exit !(a < b) }'; then
            best_wall=$wall
            best_cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f", u + s }')
        fi
    done
    echo "$best_wall $best_cpu"
}

row() { # name "swift_wall swift_cpu" "c_wall c_cpu"
    awk -v name="$1" -v s="$2" -v c="$3" -v n="$N" 'BEGIN {
        split(s, S, " "); split(c, C, " ")
        sw = n / S[1]; cw = n / C[1]; sc = n / S[2]; cc = n / C[2]
        printf "%-30s %11.0f %11.0f %6.2f   %11.0f %11.0f %6.2f\n", name, sw, cw, sw / cw, sc, cc, sc / cc }'
}

cmp <("$bin/bts-dump" "$work/in.bts") <("$work/dump" "$work/in.bts") || { echo "plain outputs differ" >&2; exit 1; }
cmp <("$bin/bts-dump" -G --symbols "$work/funcs" "$work/in.bts") <("$work/dump" -s "$work/funcs" "$work/in.bts") \
    || { echo "symbolic outputs differ" >&2; exit 1; }

"$bin/bts-extract" -o "$work/x.bts" "$work/in.log"
cmp "$work/x.bts" "$work/in.bts" || { echo "extracted records differ from the input" >&2; exit 1; }

echo "records: $N   (records/s, best of $RUNS; wall clock, then CPU time user+sys)"
printf "%-30s %11s %11s %6s   %11s %11s %6s\n" "job" "swift" "C" "ratio" "swift-cpu" "C-cpu" "ratio"
row "dump plain" "$(best "$bin/bts-dump" "$work/in.bts")" "$(best "$work/dump" "$work/in.bts")"
cs=$(best "$work/dump" -s "$work/funcs" "$work/in.bts")
row "dump symbolic -G" "$(best "$bin/bts-dump" -G --symbols "$work/funcs" "$work/in.bts")" "$cs"
row "dump symbolic (inline)" "$(best "$bin/bts-dump" --symbols "$work/funcs" "$work/in.bts")" "$cs"
row "extract (whole log)" "$(best "$bin/bts-extract" -o "$work/x.bts" "$work/in.log")" \
    "$(best "$work/extract" 0 0xffffffffffffffff "$work/in.log" "$work/cx.bts")"
row "extract middle half (-S/-E)" "$(best "$bin/bts-extract" -S $((N / 4)) -E $((3 * N / 4)) -o "$work/x.bts" "$work/in.log")" \
    "$(best "$work/extract" $((N / 4)) $((3 * N / 4)) "$work/in.log" "$work/cx.bts")"
