#!/usr/bin/env bash
# Redis-side cost per task of one drain: INFO commandstats after draining 200k noop tasks with
# one release member. Wall time on a shared VM is noisy; Redis's own per-command time is not.
# Usage: benches/commandstats.sh [drain|failure]   (needs redis-server, redis-cli, python3)
#   drain (default): 200k no-op tasks, the no-op handler.
#   failure: the same 200k tasks through the demo agent, 10% of them forced to fail with a
#   transient class (rate_limited) on every attempt: 3 attempts, no backoff, then the dead
#   letters; per task of the 200k.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
B=$PWD/target/release/redrive
MODE="${1:-drain}"
mkdir -p /tmp/prof
[ -f /tmp/prof/t.jsonl ] || python3 -c "
import json
with open('/tmp/prof/t.jsonl','w') as f:
    for i in range(200000):
        f.write(json.dumps({'tenant':'acme','kind':'k','payload':{'i':i,'pad':'x'*150}})+'\\n')
"
[ -f /tmp/prof/f.jsonl ] || python3 -c "
import json
with open('/tmp/prof/f.jsonl','w') as f:
    for i in range(200000):
        sim = 'rate_limited' if i % 10 == 0 else 'ok'
        f.write(json.dumps({'tenant':'acme','kind':'k','payload':{'i':i,'simulate':sim,'work_ms':0,'pad':'x'*120}})+'\\n')
"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port $PORT --save "" --appendonly no --daemonize yes --logfile /tmp/prof/r3.log; sleep 0.3
export REDRIVE_REDIS_URL=redis://127.0.0.1:$PORT
PID=
trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true' EXIT
# wait_for CMD VALUE: polls until CMD prints VALUE, at most 600 s.
wait_for() {
  local deadline=$((SECONDS + 600))
  while [ "$(eval "$1")" != "$2" ]; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $1 = $2" >&2; exit 1; }
    sleep 0.02
  done
}
if [ "$MODE" = failure ]; then
  # One transaction of 200k tasks: longer than the default reply timeout.
  REDRIVE_REDIS__RESPONSE_TIMEOUT_MS=120000 $B enqueue --file /tmp/prof/f.jsonl >/dev/null
  redis-cli -p $PORT config resetstat >/dev/null
  for k in RATE_LIMITED TIMEOUT MALFORMED_OUTPUT CONTEXT_OVERFLOW TOOL_FAILURE PANIC SILENT MIN_WORK_MS MAX_WORK_MS; do
    export REDRIVE_DEMO_AGENT__$k=0
  done
  REDRIVE_FLEET__HANDLER=demo REDRIVE_RETRY__DELAYS_MS='[0]' REDRIVE_RETRY__JITTER=none \
    REDRIVE_RETRY__POLL_INTERVAL_MS=10 REDRIVE_ISOLATION__BREAKER__ENABLED=false \
    REDRIVE_LOG__LEVEL=error $B run --member-id d1 & PID=$!
  T0=$SECONDS
  wait_for "redis-cli -p $PORT xlen 'redrive:{acme}:dlq'" 20000
else
  REDRIVE_REDIS__RESPONSE_TIMEOUT_MS=120000 $B enqueue --file /tmp/prof/t.jsonl >/dev/null
  redis-cli -p $PORT config resetstat >/dev/null
  REDRIVE_FLEET__HANDLER=noop REDRIVE_LOG__LEVEL=warn $B run --member-id d1 & PID=$!
  T0=$SECONDS
fi
wait_for "redis-cli -p $PORT xlen 'redrive:{acme}:lane'" 0
echo "drained in about $((SECONDS - T0)) s (wall time on a shared VM: noisy)"
kill -TERM $PID; wait $PID || true; PID=
redis-cli -p $PORT info commandstats | python3 -c "
import sys
tot=0
for l in sys.stdin:
    if not l.startswith('cmdstat_'): continue
    name,rest=l.strip().split(':',1); d=dict(kv.split('=') for kv in rest.split(','))
    u=int(d['usec']); tot+=u
    if u>1000: print(f'{name[8:]:12} calls={d[\"calls\"]:>6} {u/200000*1000:7.0f} ns/task')
print(f'total redis command time: {tot/200000*1000:.0f} ns/task')
"
