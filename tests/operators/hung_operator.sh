#!/usr/bin/env bash
# A test operator that announces ready, then never answers a ping (it stays connected and
# answers the server's own PINGs, so only the supervisor's health check can notice).
# SIGTERM ends it.
set -euo pipefail
id=${EEVEE_OPERATOR_ID:?} url=${EEVEE_NATS_URL:?} prefix=${EEVEE_SUBJECT_PREFIX:-eevee}
hostport=${url#nats://}; host=${hostport%:*}; port=${hostport##*:}
exec 3<>"/dev/tcp/$host/$port"
trap 'exit 0' TERM INT

read -r -u 3 _info
printf 'CONNECT {"verbose":false,"pedantic":false,"lang":"bash","version":"1","protocol":1,"user":"%s","pass":"%s"}\r\n' \
    "${EEVEE_NATS_USER:-}" "${EEVEE_NATS_PASSWORD:-}" >&3
printf 'SUB %s.operator.ping.%s 1\r\n' "$prefix" "$id" >&3
body=$(printf '{"operator":"%s","pid":%d}' "$id" $$)
ready=$(printf '{"v":1,"kind":"ready","id":"hung%s","source":"%s","timestamp":"%s","headers":{},"body":%s}' \
    "$$" "$id" "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" "$body")
printf 'PUB %s.operator.ready.%s %d\r\n%s\r\n' "$prefix" "$id" "${#ready}" "$ready" >&3
echo "hung operator $id ready (and deaf to pings from now on)"

while IFS= read -r -u 3 line; do
    case ${line%$'\r'} in
        PING*) printf 'PONG\r\n' >&3 ;;
        MSG*) IFS= read -r -u 3 _payload ;;  # a ping: ignored
    esac
done
