#!/bin/bash
# loop.sh <trigger>: a bash process looping with builtins only (no child
# process ever: no external command, no subshell, no command substitution).
# State: integers, an indexed array, an associative array, a string, a
# function-local counter, and the shell's own PID.
# Checks after the trigger: the closed-form invariants of the counters, every
# array element, the associative array, the string, and $BASHPID == $$ (the
# latter is getpid() asked again).
set -u
trigger=${1:?usage: loop.sh <trigger>}
tamper=${CPT_TAMPER:-0}

# start from fds 0, 1 and 2 only (close whatever the starter leaked; builtins only)
for fdpath in /proc/$$/fd/*; do
    fd=${fdpath##*/}
    if ((fd > 2)) && [[ -e /proc/$$/fd/$fd ]]; then
        eval "exec $fd>&-"
    fi
done

declare -i n=0 sum=0 xs=0
declare -a squares=()
declare -A words=()
for ((i = 0; i < 500; i++)); do
    squares[i]=$((i * i))
    words["key$i"]="value-$((i * 7 % 13))-$i"
done
text="checkpoint/restart of a bash loop"
ready_pid=$$

count_calls() { calls=$((calls + 1)); }
calls=0

echo "READY $$"

while true; do
    for ((j = 0; j < 200; j++)); do
        n+=1
        sum+=n
        xs=$((xs ^ n))
        squares[n % 500]=$(((n % 500) * (n % 500)))
        count_calls
    done
    [[ -e $trigger ]] && break
done

if [[ $tamper == 1 ]]; then words[key7]=tampered; fi

fails=()
((n > 0)) || fails+=("counter did not advance")
((sum == n * (n + 1) / 2)) || fails+=("sum $sum != n(n+1)/2 for n=$n")
case $((n % 4)) in
0) want=$n ;; 1) want=1 ;; 2) want=$((n + 1)) ;; *) want=0 ;;
esac
((xs == want)) || fails+=("xor of 1..n is $xs, want $want")
((calls == n)) || fails+=("function was called $calls times, want $n")
((${#squares[@]} == 500)) || fails+=("squares has ${#squares[@]} elements")
for ((i = 0; i < 500; i++)); do
    if ((squares[i] != i * i)); then
        fails+=("squares[$i]=${squares[i]}")
        break
    fi
done
((${#words[@]} == 500)) || fails+=("words has ${#words[@]} keys")
for ((i = 0; i < 500; i++)); do
    if [[ ${words["key$i"]-} != "value-$((i * 7 % 13))-$i" ]]; then
        fails+=("words[key$i]=${words["key$i"]-unset}")
        break
    fi
done
[[ $text == "checkpoint/restart of a bash loop" ]] || fails+=("text is '$text'")
((BASHPID == ready_pid)) || fails+=("BASHPID $BASHPID != READY pid $ready_pid")
((ready_pid == $$)) || fails+=("\$\$ changed")

if ((${#fails[@]} == 0)); then
    echo "PASS loop.sh"
    exit 0
fi
IFS=';'
echo "FAIL loop.sh: ${fails[*]}"
exit 1
