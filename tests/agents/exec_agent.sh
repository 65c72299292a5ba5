#!/bin/sh
# A test agent for the `exec` handler, speaking the stdio protocol by hand. It reads the whole
# request (until the handler closes stdin), then acts by its first argument:
#   exit N                 say so on stderr, exit N without a reply
#   reply FIELDS N         write {"id": <request id>, FIELDS} and exit N
#   kill                   kill itself with SIGKILL
#   garbage                write a line that is not the protocol, exit 0
#   steps FILE             a step's events, wait for FILE (bounded), reply ok, exit 0
#   echo                   reply ok with the request as output
#   hang PIDFILE           start `sleep 3600` in the group, write its pid and ours, hang
#   env NAME…              reply ok with {NAME: its value, or null when unset, …} (values
#                          without quotes or backslashes)
req=$(cat)
id=$(printf '%s' "$req" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
case "$1" in
  exit)
    echo "failing on purpose with $2" >&2
    exit "$2" ;;
  reply)
    printf '{"id":"%s",%s}\n' "$id" "$2"
    exit "$3" ;;
  kill)
    kill -9 $$ ;;
  garbage)
    echo "hello from a script that prints"
    exit 0 ;;
  steps)
    printf '{"id":"%s","event":"step_started","name":"draft","side_effect":false}\n' "$id"
    printf '{"id":"%s","event":"step_done","name":"draft","output":"Dear u1"}\n' "$id"
    n=0
    while [ ! -e "$2" ] && [ $n -lt 3000 ]; do sleep 0.01; n=$((n + 1)); done
    printf '{"id":"%s","status":"ok","output":{"sent":true}}\n' "$id"
    exit 0 ;;
  echo)
    printf '{"id":"%s","status":"ok","output":%s}\n' "$id" "$req"
    exit 0 ;;
  env)
    shift
    out=""
    for v in "$@"; do
      if val=$(printenv "$v"); then out="$out\"$v\":\"$val\","; else out="$out\"$v\":null,"; fi
    done
    printf '{"id":"%s","status":"ok","output":{%s}}\n' "$id" "${out%,}"
    exit 0 ;;
  hang)
    sleep 3600 &
    echo "$! $$" > "$2"
    sleep 3600 ;;
esac
exit 64
