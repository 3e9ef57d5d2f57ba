#!/usr/bin/env bash
# Runs issuebot's whole test suite: makes sure a redis-server is installed and running
# on 127.0.0.1 for the store tests, checks the import direction, then runs go vet and
# the race-enabled tests. Usage: ./test.sh  (extra args go to `go test`).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing redis-server" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "test.sh: redis-server is not installed; run: sudo apt-get install -y redis-server" >&2
    exit 1
  fi
fi

port="${REDIS_TEST_PORT:-6390}"
if ! redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null
fi
export REDIS_ADDR="127.0.0.1:$port"

# guance/ and store/ know nothing of bot/, the Feishu SDK, or each other.
for pkg in guance store; do
  other=store; [ "$pkg" = store ] && other=guance
  bad=$(go list -deps "./$pkg/..." | grep -E "^issuebot/bot(\$|/)|^issuebot/$other(\$|/)|larksuite" || true)
  if [ -n "$bad" ]; then
    echo "test.sh: $pkg/ imports: $bad" >&2
    exit 1
  fi
done

go vet ./...
# The root package runs issuebot as real processes (restarts, replicas under faults): minutes.
go test -race -count=1 -timeout 30m "$@" ./...
# Bounded fuzzing of the parsers that read what people type and what Guance stores.
# Bounded by executions, not seconds: with a duration, Go 1.26's fuzz coordinator can
# report "context deadline exceeded" as a failure when the deadline races a busy worker
# (go.dev/issue/75804, fixed in Go 1.27); a count has no deadline to race.
go test -run '^$' -fuzz '^FuzzMessageText$' -fuzztime 60000x -timeout 10m ./bot/
go test -run '^$' -fuzz '^FuzzPlainText$' -fuzztime 100000x -timeout 10m ./bot/plaintext/
