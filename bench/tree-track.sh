#!/bin/sh
# A running tree that writes without pause (test/workloads/cowwritetree: a parent and two
# children, each writing MiB of its own and the first half of MiB inherited from the parent),
# checkpointed with --track, then two --parent steps, each against the one before, all left
# running: the frozen and wall time of each, in ms ("frozen/wall"). The original tree checks its
# own memory at the end (PASS). Compare two checkouts alternately, in the same minutes:
#   bench/tree-track.sh [MiB] [RUNS] CHECKOUT...     (default 64 MiB, 3 runs; images on /dev/shm)
# Build first: npm run build (which also compiles test/work/bin/cowwritetree when the tests ran).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
mib=${1:-64}; runs=${2:-3}; shift 2 || true
bin=$here/test/work/bin/cowwritetree
[ -x "$bin" ] || { echo "no $bin: run a test that builds the workloads first" >&2; exit 1; }
one() {
  d=$(mktemp -d /dev/shm/cptrst-treetrack.XXXXXX)
  setsid "$bin" "$d/trig" "$mib" > "$d/out" 2>&1 < /dev/null &
  for i in $(seq 200); do grep -q READY "$d/out" && break; sleep 0.05; done
  p=$(awk '/READY/{print $2}' "$d/out"); sleep 0.3
  line="$1:"
  for k in 0 1 2; do
    if [ $k = 0 ]; then a="--track"; else a="--parent $d/img$((k - 1))"; fi
    t0=$(date +%s%N)
    node "$1/packages/cli/bin/cptrst.js" checkpoint "$p" -o "$d/img$k" $a --json > "$d/j$k" 2> "$d/e$k"
    t1=$(date +%s%N)
    f=$(node -e 'try { console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).frozenMs.toFixed(0)) } catch { console.log("FAILED") }' "$d/j$k")
    line="$line $f/$(((t1 - t0) / 1000000))"
    sleep 0.2
  done
  touch "$d/trig"; sleep 0.5
  if grep -q PASS "$d/out"; then line="$line PASS"; else line="$line $(tail -1 "$d/out")"; fi
  kill -9 -"$p" 2>/dev/null; sleep 0.3; rm -rf "$d"
  echo "$line"
}
echo "load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%T) UTC"
for r in $(seq "$runs"); do for c in "$@"; do one "$(cd "$c" && pwd)"; done; done
echo "load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%T) UTC"
