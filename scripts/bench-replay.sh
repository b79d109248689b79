#!/usr/bin/env bash
# Replay wall time of the bundled guest: QEMU's plain replay (baseline, no plugin), the
# same with tt's plugin counting branches, and a whole replay driven by tt
# (tt replay -p + tt run-until to a location never reached). Prints ratios to the baseline.
# Usage: scripts/bench-replay.sh [i386|x86_64] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
arch=${1:-i386}
runs=${2:-3}
bin=$(swift build --show-bin-path)
tt="$bin/tt"
work=$(mktemp -d /tmp/tt-bench.XXXXXX)
trap '"$tt" replay -K -s "$work/state" bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$tt" record --arch "$arch" -s "$work/state" bench >/dev/null

# The replay command line tt uses, minus tt's control sockets and -S: QEMU alone.
"$tt" replay -p -s "$work/state" bench >/dev/null
"$tt" replay -K -s "$work/state" bench >/dev/null
mapfile -t argv < "$work/state/replay.argv"
plain=() ; with_plugin=()
skip=0
for a in "${argv[@]}"; do
    if ((skip)); then skip=$((skip-1)); continue; fi
    case "$a" in -S) continue ;; -qmp|-gdb|-plugin) skip=1; continue ;; esac
    plain+=("$a")
done
skip=0
for a in "${argv[@]}"; do
    if ((skip)); then skip=$((skip-1)); continue; fi
    case "$a" in -S) continue ;; -qmp|-gdb) skip=1; continue ;; esac
    with_plugin+=("$a")
done

now() { date +%s.%N; }
best() { sort -g | head -1; }

time_qemu() { # argv...
    local t0 t1
    (cd "$work/state" && cp snapshot.qcow2 replay.qcow2 && t0=$(now) && "$@" >/dev/null 2>&1; t1=$(now); echo "$t1 - $t0" | bc)
}

base=$(for i in $(seq "$runs"); do time_qemu "${plain[@]}"; done | best)
plug=$(for i in $(seq "$runs"); do time_qemu "${with_plugin[@]}"; done | best)
ttrun=$(for i in $(seq "$runs"); do
    t0=$(now)
    "$tt" replay -p -s "$work/state" bench >/dev/null
    "$tt" run-until -s "$work/state" bench 0x1:999999999999 >/dev/null 2>&1 || true
    t1=$(now); echo "$t1 - $t0" | bc
done | best)
ratio() { echo "scale=2; $1 / $2" | bc; }
printf 'guest %s, best of %s runs\n' "$arch" "$runs"
printf '  plain QEMU replay (baseline)      %6.3f s\n' "$base"
printf '  QEMU replay + tt plugin           %6.3f s  %sx baseline\n' "$plug" "$(ratio "$plug" "$base")"
printf '  tt replay -p + run-until to end   %6.3f s  %sx baseline\n' "$ttrun" "$(ratio "$ttrun" "$base")"
