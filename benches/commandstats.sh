#!/usr/bin/env bash
# Redis-side cost per task of one drain: INFO commandstats after draining 200k noop tasks with
# one release member. Wall time on a shared VM is noisy; Redis's own per-command time is not.
# Usage: benches/commandstats.sh   (needs redis-server, redis-cli, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
B=$PWD/target/release/redrive
mkdir -p /tmp/prof
[ -f /tmp/prof/t.jsonl ] || python3 -c "
import json
with open('/tmp/prof/t.jsonl','w') as f:
    for i in range(200000):
        f.write(json.dumps({'tenant':'acme','kind':'k','payload':{'i':i,'pad':'x'*150}})+'\\n')
"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port $PORT --save "" --appendonly no --daemonize yes --logfile /tmp/prof/r3.log; sleep 0.3
export REDRIVE_REDIS_URL=redis://127.0.0.1:$PORT
$B enqueue --file /tmp/prof/t.jsonl >/dev/null
redis-cli -p $PORT config resetstat >/dev/null
REDRIVE_FLEET__HANDLER=noop REDRIVE_LOG__LEVEL=warn $B run --member-id d1 & PID=$!
while [ "$(redis-cli -p $PORT xlen 'redrive:{acme}:lane')" != "0" ]; do sleep 0.02; done
kill -TERM $PID; wait $PID || true
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
redis-cli -p $PORT shutdown nosave
