# Sourced by the benchmark scripts, from the repository's top: builds tt and its plugin in
# release mode unless TT_BIN names another build directory; sets bin and tt.
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
if [ -z "${TT_BIN:-}" ]; then
    for p in tt ttplugin; do
        swift build -c release --product "$p" 2>&1 | grep -E 'error|warning: ' >&2 || true
    done
fi
bin="${TT_BIN:-$(swift build -c release --show-bin-path)}"
tt="$bin/tt"
[ -x "$tt" ] || { echo "$(basename "$0"): no $tt (run scripts/setup)" >&2; exit 1; }
