#!/bin/bash
# tree.sh <trigger>: bash with job control (set -m) running a tree of subshells, builtins only.
#   root (session and group leader)
#   +- A  background job: its own process group; waits for A1
#   |  +- A1  in A's group (no job control inside a subshell)
#   +- B  background job: its own process group
# Each member keeps its own variables and checks, after the trigger, $BASHPID, its parent, group
# and session (read from /proc/$BASHPID/stat with the read builtin) and its arrays; a parent waits
# for its children and checks their exit status; the root prints the verdict. No external
# command, ever: every process of the tree is one that the tree made on purpose.
set -u
trigger=${1:?usage: tree.sh <trigger>}
tamper=${CPT_TAMPER:-0}
for fdpath in /proc/$$/fd/*; do
    fd=${fdpath##*/}
    if ((fd > 2)) && [[ -e /proc/$$/fd/$fd ]]; then
        eval "exec $fd>&-"
    fi
done

# stat fields: pid (comm) state ppid pgrp session
ids() { local line rest; read -r line < "/proc/$BASHPID/stat"; rest=${line##*) }; set -- $rest; echo_ids="$2 $3 $4"; }

declare -a squares=()
for ((i = 0; i < 300; i++)); do squares[i]=$((i * i)); done
check_squares() { local i; for ((i = 0; i < 300; i++)); do ((squares[i] == i * i)) || return 1; done; return 0; }

# leaf NAME PPID PGID SID: loops until the trigger, then checks itself; exit 0 or a failure number
leaf() {
    local name=$1 want="$2 $3 $4" n=0
    local -a mine=()
    for ((i = 0; i < 100; i++)); do mine[i]=$((i * 7 + ${#name})); done
    : > "$trigger.ready.$name"
    until [[ -e $trigger ]]; do
        for ((j = 0; j < 2000; j++)); do n=$((n + 1)); done
    done
    ids
    [[ $echo_ids == "$want" ]] || exit 11
    check_squares || exit 12
    for ((i = 0; i < 100; i++)); do ((mine[i] == i * 7 + ${#name})) || exit 13; done
    ((n > 0)) || exit 14
    exit 0
}

root=$$
ids
read -r _ rpgid rsid <<< "$echo_ids"
set -m
(
    me=$BASHPID
    ( leaf A1 "$me" "$me" "$rsid" ) &
    a1=$!
    : > "$trigger.ready.A"
    wait "$a1"
    st=$?
    ids
    [[ $echo_ids == "$root $me $rsid" ]] || exit 21
    exit $st
) &
a=$!
( leaf B "$root" "$BASHPID" "$rsid" ) &
b=$!
set +m
until [[ -e $trigger.ready.A && -e $trigger.ready.A1 && -e $trigger.ready.B ]]; do :; done
echo "READY $$"
fails=()
wait "$a"; sa=$?
wait "$b"; sb=$?
((sa == 0)) || fails+=("A (and A1) ended with $sa")
((sb == 0)) || fails+=("B ended with $sb")
[[ $tamper == 1 ]] && squares[5]=0
check_squares || fails+=("the root's array differs")
ids
[[ $echo_ids == "${echo_ids%% *} $rpgid $rsid" ]] || fails+=("root ids $echo_ids")
((BASHPID == root)) || fails+=("BASHPID $BASHPID != $root")
if ((${#fails[@]} == 0)); then
    echo "PASS tree.sh"
    exit 0
fi
IFS=';'
echo "FAIL tree.sh: ${fails[*]}"
exit 1
