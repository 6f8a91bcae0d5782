#!/usr/bin/env bash
# A test operator that exits at once with code 3, appending a line to $RECORD (when set) on
# every start so a test can count the attempts.
if [ -n "${RECORD:-}" ]; then
    echo "start $$" >>"$RECORD"
fi
echo "crash operator ${EEVEE_OPERATOR_ID:-?}: exiting at once" >&2
exit 3
