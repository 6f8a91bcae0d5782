#!/usr/bin/env bash
# An operator written in bash, speaking the NATS text protocol over /dev/tcp: proof that the
# process contract (docs/protocol.md) needs no eeveepy. It announces ready, answers pings, and
# answers `<prefix>.test.bash.<id>` requests with a pong too. SIGTERM ends it.
set -euo pipefail
id=${EEVEE_OPERATOR_ID:?} url=${EEVEE_NATS_URL:?} prefix=${EEVEE_SUBJECT_PREFIX:-eevee}
hostport=${url#nats://}; host=${hostport%:*}; port=${hostport##*:}
exec 3<>"/dev/tcp/$host/$port"
trap 'exit 0' TERM INT

n=0
envelope() {  # kind body-json
    n=$((n + 1))
    printf '{"v":1,"kind":"%s","id":"bash%s%06d","source":"%s","timestamp":"%s","headers":{},"body":%s}' \
        "$1" "$$" "$n" "$id" "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" "$2"
}
pub() {  # subject payload
    printf 'PUB %s %d\r\n%s\r\n' "$1" "${#2}" "$2" >&3
}

read -r -u 3 _info
printf 'CONNECT {"verbose":false,"pedantic":false,"lang":"bash","version":"1","protocol":1,"user":"%s","pass":"%s"}\r\n' \
    "${EEVEE_NATS_USER:-}" "${EEVEE_NATS_PASSWORD:-}" >&3
printf 'SUB %s.operator.ping.%s 1\r\n' "$prefix" "$id" >&3
printf 'SUB %s.test.bash.%s 2\r\n' "$prefix" "$id" >&3
pub "$prefix.operator.ready.$id" "$(envelope ready "{\"operator\":\"$id\",\"pid\":$$}")"
echo "bash operator $id ready"

while IFS= read -r -u 3 line; do
    line=${line%$'\r'}
    case $line in
        PING*) printf 'PONG\r\n' >&3 ;;
        MSG*)
            read -r -a parts <<<"$line"
            IFS= read -r -u 3 _payload
            if [ "${#parts[@]}" -eq 5 ]; then
                pub "${parts[3]}" "$(envelope pong "{\"operator\":\"$id\",\"state\":\"running\"}")"
            fi
            ;;
        -ERR*) echo "nats error: $line" >&2 ;;
    esac
done
