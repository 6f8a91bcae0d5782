"""Which operator ids get log files of their own: the ones the supervisors list.

The logging operator asks every supervisor on the bus (``{p}.supervisor.status``, without the
``supervisor`` header, so each one answers) every ``supervisor_refresh`` seconds, and at most
every :data:`ASK_AGAIN` seconds when an event names an id it does not know yet (so an
operator added by a reload gets its file from its first event). The ids of every answer are
known from then on; an id is forgotten only when supervisors answer and none of their answers
listed it for ``forget_after`` seconds, so nothing is forgotten while no supervisor answers.
``supervisor``, the operator's own id and the ``operators`` setting are always known. The
ids are kept in ``<data dir>/known-ids.json``, so a restart files the events published while
it was down under the right names even before a supervisor answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from nats.aio.msg import Msg

from eeveepy.bus.ipc import Ipc
from eeveepy.errors import EnvelopeError, SubjectError
from eeveepy.logs import SUPERVISOR_SOURCE
from eeveepy.protocol.codec import EnvelopeDecoder
from eeveepy.protocol.models import Ping, SupervisorStatus
from eeveepy.protocol.subjects import validate_operator_id

ASK_AGAIN: Final = 2.0
"""Seconds between asks prompted by events of ids not known yet, at least."""
ANSWER_TIMEOUT: Final = 1.0
"""Seconds to wait for a first supervisor's answer."""
LINGER: Final = 0.2
"""Seconds to wait, after the first answer, for the other supervisors' answers."""
STATE_FILE: Final = "known-ids.json"
"""Where, in the operator's data dir, the known ids are kept across restarts."""


class KnownIds:
    """The operator ids that get files of their own, from the supervisors' answers."""

    def __init__(self, fixed: Iterable[str], *, forget_after: float) -> None:
        self.fixed = frozenset(fixed)
        self.forget_after = forget_after
        self._listed: dict[str, float] = {}  # id -> (wall clock) time of the last answer with it
        self.current: frozenset[str] = self.fixed
        """The ids known now (a new object whenever it changes: safe to hand to a thread)."""

    def __contains__(self, op_id: object) -> bool:
        return op_id in self.current

    def configure(self, fixed: Iterable[str], *, forget_after: float) -> None:
        """New settings: the ids always known, how long listed ids are remembered."""
        self.fixed = frozenset(fixed)
        self.forget_after = forget_after
        self._recompute()

    def update(self, answers: Sequence[SupervisorStatus], now: float) -> bool:
        """Take in the answers of one ask; whether the known ids changed. No answer, no change."""
        if not answers:
            return False
        for answer in answers:
            for status in answer.operators:
                if _valid(status.id):
                    self._listed[status.id] = now
        cutoff = now - self.forget_after
        self._listed = {i: t for i, t in self._listed.items() if t >= cutoff}
        return self._recompute()

    def _recompute(self) -> bool:
        new = self.fixed | self._listed.keys()
        changed = new != self.current
        self.current = frozenset(new)
        return changed

    # -- kept across restarts --------------------------------------------------------------

    def load(self, path: Path) -> str | None:
        """Take in the ids saved in ``path``; what was wrong with the file, if anything."""
        try:
            data = json.loads(path.read_bytes())
            listed = data["ids"]
            if not isinstance(listed, dict):
                raise TypeError("ids is not an object")
            for op_id, when in listed.items():
                if _valid(op_id) and isinstance(when, int | float):
                    self._listed[op_id] = float(when)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            return f"{path}: {exc!r}"
        self._recompute()
        return None

    def snapshot(self) -> bytes:
        """What :meth:`save` writes."""
        return json.dumps({"ids": dict(sorted(self._listed.items()))}, indent=1).encode()

    @staticmethod
    def save(path: Path, data: bytes) -> None:
        """Write ``data`` (a :meth:`snapshot`) to ``path`` whole or not at all."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def _valid(op_id: str) -> bool:
    try:
        validate_operator_id(op_id)
    except SubjectError:
        return False
    return True


async def ask_supervisors(
    ipc: Ipc, *, timeout: float = ANSWER_TIMEOUT, linger: float = LINGER
) -> list[SupervisorStatus]:
    """Every supervisor's ``supervisor.status`` answer (none when nobody answers in time).

    Waits up to ``timeout`` for a first answer, then ``linger`` for the others; returns at
    once when the server says nobody listens. Answers that are not a supervisor's status, or
    not from a supervisor, are left out.
    """
    nc = ipc.nc
    decoder = EnvelopeDecoder(SupervisorStatus)
    answers: list[SupervisorStatus] = []
    done = asyncio.Event()

    async def on_answer(msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status") == "503":  # no responders
            done.set()
            return
        try:
            env = decoder.decode(msg.data, msg.subject)
        except EnvelopeError:
            return
        if env.source == SUPERVISOR_SOURCE:
            answers.append(env.body)
            done.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_answer)
    try:
        _, payload = ipc.encode(Ping())
        await nc.publish(ipc.subjects.supervisor("status"), payload, reply=inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        if answers:
            await asyncio.sleep(linger)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return list(answers)
