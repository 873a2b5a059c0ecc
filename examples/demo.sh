#!/usr/bin/env bash
# The cptrst demo, from a fresh clone: installs what is missing, builds, then
#   1. compiles examples/counter.c and starts it (it counts and prints to a log file),
#   2. checkpoints it with --kill (the image is complete and synced before the kill),
#   3. shows the image summary and its memory map,
#   4. restarts it from the image, with its PID, and shows it carrying on from where it was.
#
# Usage: bash examples/demo.sh        (CPTRST_DEMO_KEEP=1 keeps the work directory)
# Needs: Linux x86-64, root (ptrace, clone3 with set_tid), Node.js 20+, gcc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -t 1 ]; then B=$'\033[1m'; N=$'\033[0m'; else B=''; N=''; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- tools ---------------------------------------------------------------------------------------
have node && have npm || die "Node.js 20 or later and npm are needed"
missing=()
have gcc || missing+=(gcc libc6-dev)
have setsid || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "please install: ${missing[*]}"
  fi
fi
[ "$(uname -m)" = x86_64 ] || die "cptrst runs on x86-64 only"
[ "$(id -u)" = 0 ] || echo "demo: not root; checkpoint/restart will probably be refused (ptrace, clone3 set_tid)" >&2

# --- install and build -----------------------------------------------------------------------------
if [ ! -e node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund
fi
say "building (tsc -b packages/cli)"
node_modules/.bin/tsc -b packages/cli
cptrst() { node "$ROOT/packages/cli/dist/src/main.js" "$@"; }

# --- the example process ------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cptrst-demo.XXXXXX")"
PID=''
cleanup() {
  local rc=$?
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
  if [ $rc -eq 0 ] && [ -z "${CPTRST_DEMO_KEEP:-}" ]; then rm -rf "$WORK"; else echo "demo: work directory kept: $WORK" >&2; fi
}
trap cleanup EXIT

say "compiling examples/counter.c"
if gcc -O2 -Wall -static -o "$WORK/counter" examples/counter.c 2>/dev/null; then
  echo "static binary: $WORK/counter"
else
  gcc -O2 -Wall -o "$WORK/counter" examples/counter.c
  echo "dynamic binary (no static libc here): $WORK/counter"
fi

LOG="$WORK/counter.log"
IMG="$WORK/counter.img"
say "starting the counter (its own session, output to $LOG)"
# A session leader without a terminal: cptrst does not restore terminals yet. stdin is /dev/null
# and stdout/stderr a regular file, kinds of file cptrst knows how to reopen.
(cd "$WORK" && exec setsid "$WORK/counter" 200 >"$LOG" 2>&1 </dev/null) &
disown
for _ in $(seq 100); do [ -s "$LOG" ] && break; sleep 0.05; done
PID="$(sed -n '1s/^counter pid \([0-9]*\):.*/\1/p' "$LOG")"
[ -n "$PID" ] || die "the counter did not start: $(cat "$LOG")"
sleep 2
tail -n 3 "$LOG"

say "cptrst checkpoint $PID -o $IMG --kill"
cptrst checkpoint "$PID" -o "$IMG" --kill
# bash reaps it (disowned, silently); the restart needs its PID free.
for _ in $(seq 100); do [ -e "/proc/$PID" ] || break; sleep 0.05; done
if kill -0 "$PID" 2>/dev/null; then die "pid $PID is still alive after --kill"; fi
BEFORE="$(tail -n 1 "$LOG")"
echo "pid $PID is gone; its last line was: $BEFORE"
LINES_BEFORE="$(wc -l <"$LOG")"

say "cptrst show $IMG (summary, and the memory areas as /proc/PID/maps lines)"
cptrst show "$IMG" >"$WORK/show.txt"
sed '/^$/q' "$WORK/show.txt"
awk '$4 == "vma" { path = ($8 ~ /=/) ? "" : $8; print "  " $5 " " $6 " " $7 " " path }' "$WORK/show.txt"

say "cptrst restart $IMG"
NEWPID="$(cptrst restart "$IMG" --pidfile "$WORK/counter.pid")"
echo "restored pid: $NEWPID"
[ "$NEWPID" = "$PID" ] || die "restored as pid $NEWPID, not $PID"
sleep 2
kill -0 "$PID" 2>/dev/null || die "the restored counter died: $(tail -n 3 "$LOG")"
ps -o pid,ppid,sid,stat,etime,cmd -p "$PID"

say "the counter carries on in the same log"
AFTER="$(sed -n "$((LINES_BEFORE + 1))p" "$LOG")"
echo "last line before the checkpoint: $BEFORE"
echo "first line after the restart:    $AFTER"
tail -n 3 "$LOG"
n_before="$(sed -n 's/^counter pid [0-9]*: \([0-9]*\) .*/\1/p' <<<"$BEFORE")"
n_after="$(sed -n 's/^counter pid [0-9]*: \([0-9]*\) .*/\1/p' <<<"$AFTER")"
[ "$n_after" = "$((n_before + 1))" ] || die "expected count $((n_before + 1)) after the restart, got '$n_after'"

kill "$PID"
PID=''
say "demo: OK (checkpointed, killed, restarted with the same PID, counting on from $n_before)"
