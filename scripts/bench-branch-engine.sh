#!/usr/bin/env bash
# Benchmark (not a test) of the branch engine on the Linux guest of scripts/linux-guest:
#   1. plain replay to the end (the replay argument vector tt derives from qemu.argv, without
#      the plugin, without control sockets);
#   2. counting-only replay (the same with tt's plugin, tracing off);
#   3. tt trace-task of the clone window (first clone system call to wake_up_new_task),
#      which replays from power-on to the window and traces it;
# and the ratios 2/1 and 3/1. Goals (issue 12): counting ≤ 1.3×, trace-task ≤ 1.5×.
# Usage: scripts/bench-branch-engine.sh [STATE_DIR]
#   Builds tt and the plugin in release mode (TT_BIN=DIR uses another build). Records the
#   Linux guest into STATE_DIR (default: a temporary directory) unless it holds a recording.
#   START/END override the window (addresses or names; names need vmlinux for --symbols).
set -euo pipefail
cd "$(dirname "$0")/.."
L=guest/build/linux
[ -f "$L/vmlinuz" ] && [ -f "$L/initramfs.cpio.gz" ] || { echo "bench-branch-engine: run scripts/linux-guest first" >&2; exit 1; }
. scripts/bench/release-build.sh

dir="$(mktemp -d "${TMPDIR:-/tmp}/tt-bench-engine.XXXXXX")"
state="${1:-$dir/state}"
cleanup() { "$tt" replay -K -s "$state" linux >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

symbols=()
[ -f "$L/vmlinux" ] && symbols=(--symbols "$L/vmlinux")
if [ ! -f "$state/qemu.argv" ]; then
    "$tt" record -M 256 --kernel "$L/vmlinuz" --initrd "$L/initramfs.cpio.gz" \
        --append "console=ttyS0 panic=-1 nokaslr" "${symbols[@]}" -s "$state" linux
fi
qemu-system-x86_64 --version | head -1

# Replay argument vectors: what tt's replay changes in qemu.argv (rr=replay, a copy of the
# snapshot image, the serial output, the plugin's control file), without -S and sockets.
mapfile -t rec <"$state/qemu.argv"
plain=(); counting=()
skip=0
for a in "${rec[@]}"; do
    case "$a" in
        shift=*rr=record*) a="${a/rr=record/rr=replay}" ;;
        file=snapshot.qcow2,*) a="file=bench.qcow2,${a#file=snapshot.qcow2,}" ;;
        file:console.record) a="file:bench.console" ;;
    esac
    if [ "$a" = -plugin ]; then skip=1; counting+=("$a"); continue; fi
    if [ $skip = 1 ]; then
        skip=0
        counting+=("$bin/libttplugin.so")   # no shm=: counts into private memory
        continue
    fi
    plain+=("$a"); counting+=("$a")
done

timed() { # label, command...: wall seconds of one run
    local label=$1; shift
    cp "$state/snapshot.qcow2" "$state/bench.qcow2"
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$state" && "$@" >/dev/null 2>"$dir/$label.err") || true
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}

p=$(timed plain "${plain[@]}")
c=$(timed counting "${counting[@]}")
start="${START:-__x64_sys_clone}"; end="${END:-wake_up_new_task}"
[ ${#symbols[@]} = 0 ] && [ -z "${START:-}" ] && { echo "bench-branch-engine: without vmlinux give START and END addresses" >&2; exit 1; }
t0=$(date +%s.%N)
"$tt" trace-task -x -s "$state" --start "$start" --end "$end" -o "$dir/clone.bts" --print-limit 0 linux | tail -3
t1=$(date +%s.%N)
t=$(echo "$t1 - $t0" | bc)
rm -f "$state/bench.qcow2" "$state/bench.console"
printf 'plain replay      %8.1f s\n' "$p"
printf 'counting replay   %8.1f s   %.2fx (goal <= 1.3x)\n' "$c" "$(echo "$c / $p" | bc -l)"
printf 'trace-task clone  %8.1f s   %.2fx (goal <= 1.5x)\n' "$t" "$(echo "$t / $p" | bc -l)"
