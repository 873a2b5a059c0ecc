#!/bin/bash
# pipeline.sh <trigger>: a bash pipeline of three processes, producer | relay | consumer, builtins
# only. The producer writes numbered lines without pause; the relay passes each on and checks it
# follows the one before; the consumer checks the same. After the trigger the producer writes
# "END <count>" and exits; the relay passes it on and exits; the consumer checks that it saw
# exactly <count> lines, none lost or repeated, in order (data in flight in both pipes at the
# checkpoint must come through once). Each stage exits 0 or a failure number; the root (the
# stages' parent) waits for them and prints the verdict. CPT_TAMPER=1 makes the consumer
# miscount by one at the end.
set -u
trigger=${1:?usage: pipeline.sh <trigger>}
tamper=${CPT_TAMPER:-0}
for fdpath in /proc/$$/fd/*; do
    fd=${fdpath##*/}
    if ((fd > 2)) && [[ -e /proc/$$/fd/$fd ]]; then
        eval "exec $fd>&-"
    fi
done

producer() {
    local n=0
    : > "$trigger.ready.producer"
    until [[ -e $trigger ]]; do
        for ((k = 0; k < 50; k++)); do n=$((n + 1)); echo "$n" || exit 31; done
    done
    echo "END $n" || exit 32
    exit 0
}

# stage NAME: reads lines, each the one before plus one, until END; `relay` passes each on.
stage() {
    local name=$1 last=0 line
    : > "$trigger.ready.$name"
    while read -r line; do
        if [[ $line == END* ]]; then
            [[ $name == relay ]] && { echo "$line" || exit 41; }
            [[ $tamper == 1 && $name == consumer ]] && last=$((last - 1))
            ((${line#END } == last)) || exit 42
            exit 0
        fi
        ((line == last + 1)) || exit 43
        last=$line
        if [[ $name == relay ]]; then
            echo "$line" || exit 44
        fi
    done
    exit 45 # EOF without END: the producer's lines were cut off
}

producer | stage relay | stage consumer &
until [[ -e $trigger.ready.producer && -e $trigger.ready.relay && -e $trigger.ready.consumer ]]; do :; done
echo "READY $$"
wait $!
st=$?
# PIPESTATUS of a background job is not kept: the consumer's status tells about the whole line.
if ((st == 0)); then
    echo "PASS pipeline.sh"
    exit 0
fi
echo "FAIL pipeline.sh: the consumer ended with $st (42: wrong count, 43: a line lost or repeated, 45: no END)"
exit 1
