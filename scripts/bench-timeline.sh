#!/usr/bin/env bash
# The checkpoint index (tt index) against replaying from the start, measured in one run:
#   1. a counting replay: tt replay -p + tt run-until to a location never reached (the whole
#      recording with tt's plugin counting) — the baseline, and the recording's length T;
#   2. the index pass: tt index with its default spacing (a checkpoint every second of
#      replay), or --every E when E is given;
#   3. tt replay -p + tt run-until to an exact landmark at ~90% of T, without the index
#      (index.checkpoints moved aside: the replay boots without the index's snapshots) and
#      with it. The target is the first indexed checkpoint's landmark at or after 0.9 T
#      without its cx (with it, the checkpoint itself would be restored), so the indexed run
#      restores the checkpoint before it and replays one whole gap (the worst case; a random
#      target is half a gap away on average). Both must land identically;
#   4. tt verify (a whole replay stopping at every checkpoint);
#   5. tt trace-task of a long window with --jobs 1 and --jobs 2 (byte-identical outputs
#      checked): the window runs from one indexed checkpoint's landmark to a later one's, at
#      least MIN_RECORDS transfers apart (default 50,000,000) and with a checkpoint inside to
#      cut at; the last such window before 90% of the recording. Skipped when there is none.
# Prints the times and the ratios (speed-up of the run-until, index pass and verify against
# the counting replay; --jobs 2 against --jobs 1).
# Usage: scripts/bench-timeline.sh [STATEDIR [EVERY]]
#   EVERY: instructions between checkpoints (tt index --every); without it, tt index's default.
#   Builds tt and the plugin in release mode (TT_BIN=DIR uses another build).
#   Without STATEDIR, the bundled 32-bit guest is recorded into a temporary directory.
#   With STATEDIR (a recording), its checkpoint index is REPLACED by the one made here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench/release-build.sh
min_records=${MIN_RECORDS:-50000000}
work=$(mktemp -d /tmp/tt-bench-timeline.XXXXXX)
if [[ $# -ge 1 ]]; then
    state=$1
    name=$(basename "$state")
else
    state="$work/state"
    name=bench
fi
every=${2:-}
cleanup() {
    "$tt" replay -K -s "$state" "$name" >/dev/null 2>&1 || true
    [[ -f "$work/index.checkpoints" ]] && mv "$work/index.checkpoints" "$state/index.checkpoints"
    rm -rf "$work"
}
trap cleanup EXIT
[[ $# -ge 1 ]] || "$tt" record -s "$state" "$name" >/dev/null

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }

# The measurements start without an index (a previous one would be used by the replays).
rm -f "$state/index.checkpoints" "$state/index.qcow2"

# 1. counting replay to the end.
t0=$(now)
"$tt" replay -p -s "$state" "$name" >/dev/null
end=$("$tt" run-until -s "$state" "$name" 0x1:999999999999 2>&1 >/dev/null || true)
t_count=$(elapsed "$t0")
"$tt" replay -K -s "$state" "$name" >/dev/null
total=$(sed -n 's/.*(icount \([0-9]*\)).*/\1/p' <<<"$end")
[[ -n "$total" ]] || { echo "bench-timeline: no icount in: $end" >&2; exit 1; }

# 2. the index pass.
t0=$(now)
"$tt" index -s "$state" ${every:+--every "$every"} "$name" >"$work/index.out"
spacing="by its default spacing"
[[ -z "$every" ]] || spacing="every $every instructions"
t_index=$(elapsed "$t0")
"$tt" index -s "$state" --list "$name" >"$work/list"
count=$(grep -c '^checkpoint [0-9]' "$work/list")
mb=$(head -1 "$work/list" | sed -n 's/.*images \([0-9]*\) MB.*/\1/p')
target=$(awk -v t=$((total * 9 / 10)) '$1 == "checkpoint" && $3 == "icount" && $4 + 0 >= t { print $8; exit }' "$work/list")
[[ -n "$target" ]] || target=$(awk '$1 == "checkpoint" && $3 == "icount" { l = $8 } END { print l }' "$work/list")
target_icount=$(awk -v l="$target" '$1 == "checkpoint" && $3 == "icount" && $8 == l { print $4; exit }' "$work/list")
# Without its cx: a checkpoint's exact landmark is restored directly (no gap replayed).
target=${target%:*}

# 3. run-until the landmark, without and with the index.
mv "$state/index.checkpoints" "$work/index.checkpoints"
landing() { # a paused replay, run-until the target, kill: prints the landing; seconds in $took
    local t0
    t0=$(now)
    "$tt" replay -p -s "$state" "$name" >/dev/null
    "$tt" run-until -s "$state" "$name" "$target"
    took=$(elapsed "$t0")
    "$tt" replay -K -s "$state" "$name" >/dev/null
}
landing >"$work/without"; without=$(cat "$work/without"); t_without=$took
mv "$work/index.checkpoints" "$state/index.checkpoints"
landing >"$work/with"; with=$(cat "$work/with"); t_with=$took
if [[ "$with" != "$without" ]]; then
    echo "bench-timeline: landed differently: without the index $without, with it $with" >&2
    exit 1
fi

# 4. verify.
t0=$(now)
"$tt" verify -s "$state" "$name" >"$work/verify.out"
t_verify=$(elapsed "$t0")

# 5. a long window traced with one job and with two.
window=$(awk -v limit=$((total * 9 / 10)) -v min="$min_records" '
    $1 == "checkpoint" && $3 == "icount" && $5 == "brctr" && $0 !~ /unresumable/ && $4 + 0 <= limit {
        n++; icount[n] = $4; brctr[n] = $6; at[n] = $8 }
    END {
        for (j = n; j >= 3; j--) for (i = j - 2; i >= 1; i--)
            if (brctr[j] - brctr[i] >= min) { print at[i], at[j], brctr[j] - brctr[i]; exit }
    }' "$work/list")
t_jobs1=""; t_jobs2=""
if [[ -n "$window" ]]; then
    read -r wstart wend wrecords <<<"$window"
    traced() { # jobs: seconds in $took, output in $work/jobsN.bts
        local t0
        t0=$(now)
        "$tt" trace-task -s "$state" --jobs "$1" --start "$wstart" --end "$wend" -o "$work/jobs$1.bts" --print-limit 0 "$name" >/dev/null
        took=$(elapsed "$t0")
    }
    traced 1; t_jobs1=$took
    traced 2; t_jobs2=$took
    cmp -s "$work/jobs1.bts" "$work/jobs2.bts" || { echo "bench-timeline: --jobs 2 differs from --jobs 1" >&2; exit 1; }
fi

printf 'recording %s: %s instructions; index %s: %s checkpoints, %s MB of images\n' "$state" "$total" "$spacing" "$count" "$mb"
printf 'target %s at icount %s (%s%% of the recording), landed %s\n' "$target" "$target_icount" "$((target_icount * 100 / total))" "$with"
printf '  counting replay to the end (baseline)   %8.2f s\n' "$t_count"
printf '  index pass                               %8.2f s  %sx the counting replay\n' "$t_index" "$(ratio "$t_index" "$t_count")"
printf '  verify                                   %8.2f s  %sx the counting replay\n' "$t_verify" "$(ratio "$t_verify" "$t_count")"
printf '  replay -p + run-until, no index          %8.2f s\n' "$t_without"
printf '  replay -p + run-until, with the index    %8.2f s  %sx faster\n' "$t_with" "$(ratio "$t_without" "$t_with")"
if [[ -n "$t_jobs1" ]]; then
    printf 'trace-task %s .. %s: %s records (byte-identical with 1 and 2 jobs)\n' "$wstart" "$wend" "$wrecords"
    printf '  trace-task --jobs 1                      %8.2f s\n' "$t_jobs1"
    printf '  trace-task --jobs 2                      %8.2f s  %sx --jobs 1\n' "$t_jobs2" "$(ratio "$t_jobs2" "$t_jobs1")"
else
    printf 'trace-task --jobs: no window of %s records between indexed checkpoints\n' "$min_records"
fi
