#!/usr/bin/env bash
# Profile one release member draining 200k noop tasks: perf on the member and on redis-server.
# Usage: benches/profile-drain.sh   (needs perf, redis-server, redis-cli, python3; writes /tmp/prof)
set -euo pipefail
N=${N:-200000}
mkdir -p /tmp/prof
cd "$(dirname "$0")/.."
cargo build --release --quiet
python3 -c "
import json
with open('/tmp/prof/t.jsonl','w') as f:
    for i in range($N):
        f.write(json.dumps({'tenant':'acme','kind':'k','payload':{'i':i,'pad':'x'*150}})+'\\n')
"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port $PORT --save "" --appendonly no --daemonize yes --logfile /tmp/prof/r.log --pidfile /tmp/prof/r.pid
sleep 0.3
BIN=$PWD/target/release/redrive
export REDRIVE_REDIS_URL=redis://127.0.0.1:$PORT REDRIVE_LOG__LEVEL=warn
$BIN enqueue --file /tmp/prof/t.jsonl
RPID=$(cat /tmp/prof/r.pid)
REDRIVE_FLEET__HANDLER=noop $BIN run --member-id d1 &
PID=$!
perf record -g -o /tmp/prof/member.data -p $PID 2>/dev/null &
P1=$!
perf record -g -o /tmp/prof/redis.data -p $RPID 2>/dev/null &
P2=$!
start=$(date +%s.%N)
while [ "$(redis-cli -p $PORT xlen 'redrive:{acme}:lane')" != "0" ]; do sleep 0.02; done
end=$(date +%s.%N)
kill -INT $P1 $P2; wait $P1 $P2 || true
kill -TERM $PID; wait $PID || true
redis-cli -p $PORT shutdown nosave >/dev/null 2>&1 || true
python3 -c "d=$end-$start; print(f'drained $N tasks in {d:.2f} s = {$N/d:.0f} tasks/s (under perf)')"
echo "member:  perf report -i /tmp/prof/member.data --no-children --sort sym -g none"
echo "redis:   perf report -i /tmp/prof/redis.data --no-children --sort sym -g none"
