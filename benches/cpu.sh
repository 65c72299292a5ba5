#!/usr/bin/env bash
# CPU per task of each process during one drain: a private redis-server, 200,000 noop tasks
# enqueued, one release member draining them; prints wall time, the member's and Redis's CPU
# time per task (from /proc/<pid>/stat) and the script/XREADGROUP/XCLAIM command stats.
# Usage: benches/cpu.sh on|off   (records on or off: tasks.enabled for producer and member)
# Needs redis-server, redis-cli, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-on}
case "$mode" in on | off) ;; *) echo "usage: $0 on|off" >&2; exit 64 ;; esac
cargo build --release --quiet
B=$PWD/target/release/redrive
dir=$(mktemp -d)
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
python3 -c "
import json
with open('$dir/t.jsonl','w') as f:
    for i in range(200000):
        f.write(json.dumps({'tenant':'acme','kind':'k','payload':{'i':i,'pad':'x'*150}})+'\n')
"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$PORT" --save "" --appendonly no --daemonize yes --pidfile "$dir/r.pid" --logfile "$dir/r.log"
for _ in $(seq 50); do [ -s "$dir/r.pid" ] && redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
RPID=$(cat "$dir/r.pid")
export REDRIVE_REDIS_URL=redis://127.0.0.1:$PORT
[ "$mode" = off ] && export REDRIVE_TASKS__ENABLED=false
$B enqueue --file "$dir/t.jsonl" >/dev/null
redis-cli -p "$PORT" config resetstat >/dev/null
r0=$(awk '{print $14+$15}' "/proc/$RPID/stat")
t0=$(date +%s.%N)
REDRIVE_FLEET__HANDLER=noop REDRIVE_LOG__LEVEL=warn $B run --member-id d1 &
PID=$!
deadline=$((SECONDS + 300))
while [ "$(redis-cli -p "$PORT" xlen 'redrive:{acme}:lane')" != "0" ]; do
  [ $SECONDS -lt $deadline ] || { echo "drain did not finish in 300 s" >&2; kill "$PID"; exit 1; }
  sleep 0.02
done
t1=$(date +%s.%N)
m=$(awk '{print $14+$15}' "/proc/$PID/stat")
r1=$(awk '{print $14+$15}' "/proc/$RPID/stat")
kill -TERM "$PID"
wait "$PID" || true
python3 -c "
w=$t1-$t0
print(f'$mode: wall {w:.2f}s {200000/w:.0f}/s  member cpu {$m/100/200000*1e6:.1f} us/task  redis cpu {($r1-$r0)/100/200000*1e6:.1f} us/task (member start-up included)')"
redis-cli -p "$PORT" info commandstats | grep -E "evalsha|xreadgroup|xclaim" | cut -d, -f1-3
