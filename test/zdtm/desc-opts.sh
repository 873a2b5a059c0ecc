#!/usr/bin/env bash
# A stand-in for the cptrst CLI under ../shared/criu/zdtm-run.sh that gives a checkpoint the
# options a test's .desc asks of CRIU (its 'opts'), as CRIU's own harness does, mapped to
# cptrst's: --ext-unix-sk becomes --ext-unix-sk reconnect. Every other call goes through as is.
#   CPTRST=$PWD/test/zdtm/desc-opts.sh ../shared/criu/zdtm-run.sh socket-ext
# The harness runs each test in a directory named zdtm-<test>.XXXX: that names the test.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
cli=${CPTRST_CLI:-$here/node_modules/.bin/cptrst}
src=${ZDTM:-/var/tmp/criu-4.2/test/zdtm/static}
name=$(basename "$PWD"); name=${name#zdtm-}; name=${name%.*}
extra=()
if [ "${1:-}" = checkpoint ] && [ -f "$src/$name.desc" ] && grep -q -- "--ext-unix-sk" "$src/$name.desc"; then
	extra=(--ext-unix-sk reconnect)
fi
exec "$cli" "$@" "${extra[@]}"
