#!/usr/bin/env bash
# Benchmark (not a test): `tt log summary` on a generated replay log next to
# `cat FILE >/dev/null` on the same file, both from the page cache.
# Goal (issue 3): summary within 2x cat's time, peak RSS under 64 MiB.
# Usage: scripts/bench-log.sh [SIZE]   (SIZE as for `tt log generate`, default 1G)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
size="${1:-1G}"

swift build -c release --product tt 2>&1 | grep -E 'error|warning: ' >&2 || true
tt=.build/release/tt
[ -x "$tt" ] || { echo "bench-log: no $tt" >&2; exit 1; }

dir="$(mktemp -d "${TMPDIR:-/tmp}/tt-bench-log.XXXXXX")"
trap 'rm -rf "$dir"' EXIT
log="$dir/bench.log"
"$tt" log generate --size "$size" "$log"
bytes=$(stat -c %s "$log")

# Best of 3 runs: wall seconds, CPU seconds (user + system), and the peak RSS in KiB,
# for a command writing to /dev/null. CPU time is printed too because on a shared machine
# the wall time also measures the other processes.
measure() {
    local best="" cpu="" rss=0
    for _ in 1 2 3 4 5; do
        /usr/bin/time -f '%e %U %S %M' -o "$dir/time" "$@" >/dev/null
        read -r t u s m <"$dir/time"
        c=$(awk -v u="$u" -v s="$s" 'BEGIN{print u + s}')
        if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$t; fi
        if [ -z "$cpu" ] || awk -v a="$c" -v b="$cpu" 'BEGIN{exit !(a<b)}'; then cpu=$c; fi
        [ "$m" -gt "$rss" ] && rss=$m
    done
    echo "$best $cpu $rss"
}

cat "$log" >/dev/null   # warm the page cache so both read from memory
read -r cat_s cat_cpu cat_kb < <(measure cat "$log")
read -r tt_s tt_cpu tt_kb < <(measure "$tt" log summary "$log")
entries=$("$tt" log summary --json "$log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["entries"])')

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
awk -v b="$bytes" -v e="$entries" -v cs="$cat_s" -v cc="$cat_cpu" -v ck="$cat_kb" \
    -v ts="$tt_s" -v tc="$tt_cpu" -v tk="$tt_kb" 'BEGIN {
    mb = b / 1e6
    if (cs < 0.01) cs = 0.01; if (ts < 0.01) ts = 0.01
    if (cc < 0.01) cc = 0.01; if (tc < 0.01) tc = 0.01
    printf "log:              %d bytes, %d entries (tt log generate, 2 vCPUs, 170 records per branch entry)\n", b, e
    printf "                  wall (best of 5)       CPU user+sys (best of 5)   peak RSS\n"
    printf "cat:              %6.2f s %7.0f MB/s   %6.2f s %7.0f MB/s       %6.1f MiB\n", cs, mb / cs, cc, mb / cc, ck / 1024
    printf "tt log summary:   %6.2f s %7.0f MB/s   %6.2f s %7.0f MB/s       %6.1f MiB\n", ts, mb / ts, tc, mb / tc, tk / 1024
    printf "ratio (tt/cat):   wall %.2fx, CPU %.2fx  (goal <= 2.00x: %s)\n", ts / cs, tc / cc, (ts / cs <= 2.0 ? "met" : "NOT met")
    printf "peak RSS:         %.1f MiB (goal < 64 MiB: %s)\n", tk / 1024, (tk < 65536 ? "met" : "NOT met")
}'
