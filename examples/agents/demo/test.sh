#!/usr/bin/env bash
# The demo's tests, run by the `tests` step of examples/agents/review-loop.plue.py.
set -euo pipefail
cd "$(dirname "$0")"
check() {
    local expected="$1"
    shift
    local got
    got="$(bash greet.sh "$@")"
    if [ "$got" != "$expected" ]; then
        echo "FAIL: greet.sh $* printed '$got', expected '$expected'"
        exit 1
    fi
    echo "ok: greet.sh $*"
}
check "hello, world"
check "hello, plue" plue
if grep -q -- '--shout' greet.sh; then
    check "HELLO, PLUE" --shout plue
    check "HELLO, WORLD" --shout
fi
echo "greet.sh: all tests passed"
