#!/usr/bin/env bash
# Runs issuebot's benchmarks and writes BENCHMARKS.md with the numbers and the machine
# they ran on. Usage: ./bench.sh   (about 20 minutes; needs redis-server like test.sh).
#
# ISSUEBOT_BENCH_WINDOW compresses time for the budget-bound benchmarks (default 10s: a
# Guance budget window of 10 s stands for a minute; their seconds are scaled back to the
# real scale). Set ISSUEBOT_BENCH_WINDOW=1m for the real scale (several hours).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
export ISSUEBOT_BENCH_WINDOW="${ISSUEBOT_BENCH_WINDOW:-10s}"
out="${BENCH_OUT:-BENCHMARKS.md}"
raw="$(mktemp)"
real="$(mktemp)"
trap 'rm -f "$raw" "$real"' EXIT

port="${REDIS_TEST_PORT:-6390}"
if ! redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 1 100); do redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
export REDIS_ADDR="127.0.0.1:$port"

bench() { # package, pattern
  go test "$1" -run '^$' -bench "$2" -benchtime 1x -timeout 3h | tee -a "$raw"
}
bench ./bot '^BenchmarkNewIssueLatency$'
bench ./bot '^BenchmarkThreadReplyLatency$'
bench ./bot '^BenchmarkStalenessByTracked$'
# The webhook's target case once more at the real scale (a one-minute window; 2 minutes).
ISSUEBOT_BENCH_WINDOW=1m go test ./bot -run '^$' -bench '^BenchmarkStalenessByTracked$/^tracked=150$/^hints=true$' \
  -benchtime 1x -timeout 1h | tee "$real"
bench ./bot '^BenchmarkEventAck$'
bench ./bot '^BenchmarkStorm$'
bench . '^BenchmarkMemoryWithTrackedIssues$'

# table prints the results of the benchmarks matching $1 (in file $2, else the main run)
# as a Markdown table: one row per sub-benchmark, its metrics as "value unit" (the time
# per run left out).
table() {
  echo "| case | results |"
  echo "| --- | --- |"
  grep -E "^$1" "${2:-$raw}" | awk '{
      name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
      m = ""
      for (i = 5; i + 1 <= NF; i += 2) m = m (m == "" ? "" : " · ") $i " " $(i+1)
      print "| " name " | " m " |"
    }'
}

{
  echo "# issuebot benchmarks"
  echo
  echo "Produced by \`./bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (commit $(git rev-parse --short HEAD))."
  echo
  echo "Machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') × $(nproc);"
  echo "$(awk '/MemTotal/ {printf "%.1f GB RAM", $2/1048576}' /proc/meminfo); $(go version | cut -d' ' -f3); Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2)."
  echo "Everything runs against the stateful fakes on 127.0.0.1 (the Guance fake allows 20 requests a minute per key,"
  echo "the Feishu fake 5 messages a second per chat, as the platforms do). Budget-bound benchmarks ran with a Guance budget"
  echo "window of ${ISSUEBOT_BENCH_WINDOW} standing for a minute; their seconds are scaled back to the real scale."
  echo
  echo "## New issue → card (POLL_INTERVAL 2 s and 10 s; real scale)"
  echo
  echo "Bounded by the Guance budget: 20 requests a minute per key, of which issuebot spends 18."
  echo
  table 'BenchmarkNewIssueLatency'
  echo
  echo "## Thread reply → Guance, and event ack (real scale)"
  echo
  table 'BenchmarkThreadReplyLatency'
  echo
  echo "## Event ack at 200 events/s (long connection; Feishu wants an ack within 3 s)"
  echo
  table 'BenchmarkEventAck'
  echo
  echo "## Guance reply → thread staleness by tracked issues, with and without webhook hints"
  echo
  echo "Bounded by the Guance budget (20 requests a minute): without hints every tracked issue waits its turn in the"
  echo "watcher's round, so staleness grows with the number of issues (cycle_s is the status report's estimate of a full"
  echo "round, reported where the benchmark could not wait for every reply); with a hint right after each reply, the"
  echo "reply is read next."
  echo
  table 'BenchmarkStalenessByTracked'
  echo
  echo "The webhook's target (150 tracked issues, a hint after each reply: p99 ≤ 10 s) once more at the real scale,"
  echo "a one-minute budget window:"
  echo
  table 'BenchmarkStalenessByTracked' "$real"
  echo
  echo "## A 200-issue storm into one chat"
  echo
  echo "Bounded by Feishu's 5 messages a second per chat (and the Guance budget for listing the issues)."
  echo
  table 'BenchmarkStorm'
  echo
  echo "## Memory and store size with 10 000 tracked issues"
  echo
  echo "The built binary as its own process, watching 10 000 carded open issues for a minute. RSS counts the embedded"
  echo "store's file pages the process has mapped (the store hands them back every 10 s; they stay in the page cache);"
  echo "peak_anon_MB is its own memory (heap, stacks). Target: ≤ 40 MB RSS on the embedded store."
  echo
  table 'BenchmarkMemoryWithTrackedIssues'
  echo
  echo "## Raw output"
  echo
  echo '```'
  grep -hE '^(Benchmark|    [a-z_]+_test\.go)' "$raw" "$real" || true
  echo '```'
} >"$out"
echo "bench.sh: wrote $out" >&2
