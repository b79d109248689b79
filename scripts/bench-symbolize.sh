#!/usr/bin/env bash
# Benchmark `tt symbolize` against addr2line -f, eu-addr2line -f and llvm-symbolizer:
# 1M code addresses sampled from a large debug binary, wall time including load, peak RSS.
#
#   scripts/bench-symbolize.sh [BINARY] [COUNT]
#
# BINARY defaults to the vmlinux of Debian's current kernel (scripts/kernel-vmlinux fetches
# linux-image-<ver>-dbg into $TT_BENCH_DIR, default /var/tmp/tt-bench, and extracts only
# vmlinux), falling back to tt's own debug build. Goals (GDB style, load included): at most
# 0.15x llvm-symbolizer's time, and under 200 MB peak RSS; also printed: the speed-up over
# the fastest baseline (former goal: 2x).
set -euo pipefail
cd "$(dirname "$0")/.."

count=${2:-1000000}
bench_dir=${TT_BENCH_DIR:-/var/tmp/tt-bench}
mkdir -p "$bench_dir"

binary=${1:-}
if [ -z "$binary" ]; then
    binary=$(scripts/kernel-vmlinux 2>/dev/null || true)
    if [ -z "$binary" ]; then
        swift build --product tt >/dev/null
        binary=.build/debug/tt
    fi
fi

# TT_BENCH_TT: an already built tt to measure (then nothing is built).
tt=${TT_BENCH_TT:-}
if [ -z "$tt" ]; then
    swift build -c release --product tt 2>&1 | grep -E 'error' >&2 || true
    tt=.build/release/tt
fi
[ -x "$tt" ] || { echo "bench: no release build of tt" >&2; exit 1; }

echo "binary: $binary ($(du -h "$binary" | cut -f1))"
addrs="$bench_dir/addresses-$count.txt"
# Addresses inside function symbols of the text (start + uniform offset within the size),
# fixed seed: the same input for every tool.
nm -S --defined-only "$binary" | python3 -c '
import random, sys
count = int(sys.argv[1])
funcs = []
for line in sys.stdin:
    f = line.split()
    if len(f) == 4 and f[2] in "tTwW" and int(f[1], 16) > 0:
        funcs.append((int(f[0], 16), int(f[1], 16)))
rng = random.Random(20261121)
out = sys.stdout
for _ in range(count):
    a, s = funcs[rng.randrange(len(funcs))]
    out.write("0x%x\n" % (a + rng.randrange(s)))
' "$count" > "$addrs"
echo "input: $count addresses ($(wc -l < "$addrs") lines) from $(nm -S --defined-only "$binary" | awk '$3 ~ /^[tTwW]$/' | wc -l) function symbols"

limit=${TT_BENCH_TIMEOUT:-600}
# Wall time is what the goal is about; CPU time (user+sys) is printed too because on a
# shared machine wall time mostly measures the other processes.
declare -A wall cpu rss
run() { # name, command...
    local name=$1; shift
    local t="$bench_dir/time-$name" u s
    # time(1) outside timeout(1), so a timed-out tool is still measured (and killed).
    /usr/bin/time -f '%e %U %S %M' -o "$t" timeout "$limit" "$@" < "$addrs" > "$bench_dir/out-$name" 2>"$bench_dir/err-$name" || true
    read -r w u s r < <(tail -1 "$t")
    local lines; lines=$(wc -l < "$bench_dir/out-$name")
    local per=1; [[ $name == tt-* ]] || per=2   # the baselines print name and location lines
    if [ "$lines" -ge $((count * per)) ]; then
        wall[$name]=$w; rss[$name]=$r
        cpu[$name]=$(python3 -c "print('%.2f' % ($u + $s))")
        printf '%-18s %8.2f s wall  %8.2f s cpu  %6d MB peak RSS\n' "$name" "$w" "${cpu[$name]}" $((r / 1024))
    else
        local done_=$((lines / per))
        printf '%-18s stopped after %ss wall (%.2f s cpu) at %d of %d addresses; at that rate 1M would take ~%.0f s cpu; %d MB peak RSS\n' \
            "$name" "$w" "$(python3 -c "print($u + $s)")" "$done_" "$count" \
            "$(python3 -c "print(($u + $s) * $count / max($done_, 1))")" $((r / 1024))
    fi
}

run tt-gdb-style      "$tt" symbolize --symbols "$binary"
run tt-with-lines     "$tt" symbolize --symbols "$binary" --lines
run tt-inline-lines   "$tt" symbolize --symbols "$binary" --inline --lines
# TT_BENCH_BASELINES: the baselines to run (default: all three).
baselines=${TT_BENCH_BASELINES:-addr2line-f eu-addr2line-f llvm-symbolizer}
[[ " $baselines " == *" addr2line-f "* ]] && run addr2line-f addr2line -f -e "$binary"
[[ " $baselines " == *" eu-addr2line-f "* ]] && run eu-addr2line-f eu-addr2line -f -e "$binary"
[[ " $baselines " == *" llvm-symbolizer "* ]] && run llvm-symbolizer llvm-symbolizer --obj="$binary" --no-inlines --output-style=GNU

echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
for metric in wall cpu; do
    declare -n m=$metric
    fastest=""; fastest_name=""
    for n in addr2line-f eu-addr2line-f llvm-symbolizer; do
        w=${m[$n]:-}
        [ -n "$w" ] || continue
        if [ -z "$fastest" ] || python3 -c "import sys; sys.exit(0 if $w < $fastest else 1)"; then fastest=$w; fastest_name=$n; fi
    done
    [ -n "$fastest" ] || continue
    for n in tt-gdb-style tt-with-lines tt-inline-lines; do
        [ -n "${m[$n]:-}" ] || continue
        python3 -c "print('%-5s %-18s %.2fx faster than the fastest baseline (%s, %.2f s)' % ('$metric', '$n', $fastest / ${m[$n]}, '$fastest_name', $fastest))"
    done
    if python3 -c "import sys; sys.exit(0 if $fastest / ${m[tt-gdb-style]:-1e9} >= 2 else 1)"; then
        echo "$metric goal (>= 2x, gdb style): met"
    else
        echo "$metric goal (>= 2x, gdb style): NOT met"
    fi
done

# The goals, GDB style against llvm-symbolizer (--no-inlines, as GDB style ignores inlining).
echo
if [ -n "${rss[tt-gdb-style]:-}" ]; then
    mb=$((rss[tt-gdb-style] / 1024))
    if [ "$mb" -lt 200 ]; then verdict=met; else verdict="NOT met"; fi
    echo "peak RSS, gdb style: $mb MB (goal < 200 MB): $verdict"
fi
for metric in wall cpu; do
    declare -n m=$metric
    [ -n "${m[tt-gdb-style]:-}" ] && [ -n "${m[llvm-symbolizer]:-}" ] || continue
    python3 -c "
r = ${m[tt-gdb-style]} / ${m[llvm-symbolizer]}
print('%-5s gdb style: %.2f s = %.3fx llvm-symbolizer (%.2f s) (goal <= 0.15x): %s' % ('$metric', ${m[tt-gdb-style]}, r, ${m[llvm-symbolizer]}, 'met' if r <= 0.15 else 'NOT met'))"
done
