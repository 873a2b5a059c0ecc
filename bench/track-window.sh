#!/bin/sh
# The frozen window of a first `checkpoint --track` of a tree: bench/forktree.c (16 processes of
# MiB each, half shared copy-on-write with the root), left running, through the CLI; per run the
# frozen time and the phases of write tracking (`--json` timings, ms): "tracking" (in the frozen
# window), "prepare trackers" (before the freeze), mm's dump, the snapshots' forks, "uffd areas".
# Then one `--parent` step with --step. Compare two checkouts alternately, in the same minutes:
#   bench/track-window.sh [--step] [MiB] [RUNS] CHECKOUT...   (default 64 MiB, 3 runs; images on /dev/shm)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
step=0; [ "${1:-}" = --step ] && { step=1; shift; }
mib=${1:-64}; runs=${2:-3}; shift 2 || true
work=$(mktemp -d /tmp/cptrst-trackwin.XXXXXX)
gcc -O2 -o "$work/forktree" "$here/bench/forktree.c" || exit 1
phases() {
  node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1])); const t = j.timings; const g = (k) => (t[k] ?? 0).toFixed(1);
    console.log(`${process.argv[2]} frozen ${j.frozenMs.toFixed(0)} | tracking ${g("tracking")} | prepare trackers ${g("prepare trackers")} | mm ${g("mm")} | snapshot ${g("snapshot")} | uffd areas ${g("uffd areas")}`)' "$1" "$2" 2>/dev/null || echo "$2 FAILED"
}
one() {
  d=$(mktemp -d /dev/shm/cptrst-trackwin.XXXXXX)
  setsid "$work/forktree" "$mib" "$d/trig" > "$d/out" 2>&1 < /dev/null &
  for i in $(seq 600); do grep -q READY "$d/out" 2>/dev/null && break; sleep 0.05; done
  p=$(awk '/READY/{print $2}' "$d/out"); sleep 0.3
  node "$1/packages/cli/bin/cptrst.js" checkpoint "$p" -o "$d/img0" --track --json > "$d/j0" 2> "$d/e0"
  phases "$d/j0" "$1 --track:"
  if [ $step = 1 ]; then
    sleep 0.3
    node "$1/packages/cli/bin/cptrst.js" checkpoint "$p" -o "$d/img1" --parent "$d/img0" --json > "$d/j1" 2> "$d/e1"
    phases "$d/j1" "$1 --parent:"
  fi
  kill -9 -"$p" 2>/dev/null; sleep 0.5; rm -rf "$d"
}
echo "load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%T) UTC"
for r in $(seq "$runs"); do for c in "$@"; do one "$(cd "$c" && pwd)"; done; done
echo "load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%T) UTC"
rm -rf "$work"
