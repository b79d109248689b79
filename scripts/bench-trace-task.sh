#!/usr/bin/env bash
# Benchmark (not a test): wall time of `tt trace-task` on the bundled guest next to a plain
# replay of the same recording (QEMU run to the end with the replay argument vector tt
# derives from qemu.argv: same machine, same plugin, no tracing, no control sockets).
# Goal (issue 7): trace-task at most 1.5x the plain replay.
# Usage: scripts/bench-trace-task.sh [i386|x86_64]   (builds tt and the plugin in release mode;
#        TT_BIN=DIR uses another build, e.g. the debug one scripts/demo uses; RUNS=N
#        repetitions, default 5, the best is kept)
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-i386}"
runs="${RUNS:-5}"
. scripts/bench/release-build.sh
make -s -C guest

dir="$(mktemp -d "${TMPDIR:-/tmp}/tt-bench-trace.XXXXXX")"
state="$dir/state"
cleanup() { "$tt" replay -K -s "$state" bench >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
"$tt" record --arch "$arch" -s "$state" bench >"$dir/record.out"
cat "$dir/record.out"

# The plain replay: qemu.argv with rr=replay, a copy of the snapshot image, the serial
# output and the plugin's control file elsewhere (what tt's replay changes, minus -S and
# the QMP/gdb sockets).
mapfile -t rec <"$state/qemu.argv"
replay=()
for a in "${rec[@]}"; do
    case "$a" in
        shift=*rr=record*) a="${a/rr=record/rr=replay}" ;;
        file=snapshot.qcow2,*) a="file=bench.qcow2,${a#file=snapshot.qcow2,}" ;;
        file:console.record) a="file:bench.console" ;;
        *,shm=record.shm) a="${a%,shm=record.shm}" ;;
    esac
    replay+=("$a")
done
plain() {
    cp "$state/snapshot.qcow2" "$state/bench.qcow2"
    (cd "$state" && "${replay[@]}") || [ $? -eq 33 ]   # the guest's isa-debug-exit success status
}

# Best wall time of $runs runs of a command (seconds, 3 decimals).
best() {
    local b=""
    for _ in $(seq "$runs"); do
        local t0 t1 t
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || { echo "bench-trace-task: failed: $*" >&2; exit 1; }
        t1=$(date +%s.%N)
        t=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')
        if [ -z "$b" ] || awk -v a="$t" -v b="$b" 'BEGIN{exit !(a<b)}'; then b=$t; fi
    done
    echo "$b"
}

window() { "$tt" trace-task -s "$state" --start compute_checksum#5 --end fib -o "$dir/w.bts" --print-limit 0 bench; }
whole() { "$tt" trace-task -s "$state" --start kmain --end debug_exit -o "$dir/all.bts" --print-limit 0 bench; }

plain_s=$(best plain)
window >"$dir/w.out"; window_records=$(sed -n 's/.*: \([0-9]*\) records.*/\1/p' "$dir/w.out" | head -1)
whole >"$dir/all.out"; whole_records=$(sed -n 's/.*: \([0-9]*\) records.*/\1/p' "$dir/all.out" | head -1)
window_s=$(best window)
whole_s=$(best whole)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs; tt: $tt; best of $runs"
awk -v p="$plain_s" -v w="$window_s" -v a="$whole_s" -v wr="$window_records" -v ar="$whole_records" -v arch="$arch" 'BEGIN {
    printf "guest %s\n", arch
    printf "plain replay to the end (qemu, replay argv):           %6.3f s\n", p
    printf "trace-task compute_checksum#5 -> fib (%7d records): %6.3f s  %.2fx\n", wr, w, w / p
    printf "trace-task kmain -> debug_exit       (%7d records): %6.3f s  %.2fx\n", ar, a, a / p
    printf "goal: trace-task <= 1.5x the plain replay: %s\n", (w <= 1.5 * p ? "met" : "NOT met") " (window), " (a <= 1.5 * p ? "met" : "NOT met") " (whole run)"
}'
