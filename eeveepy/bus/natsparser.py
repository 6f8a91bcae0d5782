"""nats-py's protocol parser with a short path for the ``MSG`` lines of fast-path subscriptions.

nats-py's :class:`~nats.protocol.parser.Parser` copies what it reads into a ``bytearray``,
tries its ``MSG`` regular expression on it, keeps the line's parts in a dict, goes round its
loop once more for the payload, copies the payload twice and awaits the client's
``_process_msg`` coroutine: about a fifth of a subscriber's CPU per message once the
envelope is validated. :class:`FastParser` reads each ``MSG`` line from the bytes received
with one ``find`` and one ``split``, slices the payload once and hands it to the
subscription's fast path (:func:`~eeveepy.bus.natsadapter.add_fast_path`) by a plain call.

Everything else is nats-py's: a line it does not read this way (``HMSG``, ``PING``, ``INFO``,
``-ERR``, an ``MSG`` line it cannot split into the four or five parts nats-py's expression
would take) goes to nats-py's own parser alone, one control line at a time, and so do the
payloads that follow them; messages of other subscriptions go to the client's
``_process_msg`` as nats-py's parser would send them. What is not complete yet waits in the
parser's ``buf`` as nats-py's does. ``tests/test_natsparser.py`` feeds both parsers the same
streams, cut at every byte.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from nats.protocol.parser import AWAITING_CONTROL_LINE, MSG_RE, Parser

if TYPE_CHECKING:
    from eeveepy.bus.natsadapter import EeveeClient

__all__ = ["FastParser", "parser_problems"]

_MSG = re.compile(rb"MSG (\S+) (\d+) (?:(\S+) )?(\d+)\r\n")
"""An ``MSG`` line as nats-server writes it (one space between the parts): what it matches,
nats-py's ``MSG_RE`` matches too, with the same parts."""


class FastParser(Parser):
    """The protocol parser of an :class:`~eeveepy.bus.natsadapter.EeveeClient`."""

    def __init__(self, nc: EeveeClient) -> None:
        super().__init__(nc)
        self._client = nc

    async def parse(self, data: bytes = b"") -> None:
        """Parse ``data`` (bytes received), after what was left over from the last call."""
        if self.buf and self.state == AWAITING_CONTROL_LINE:
            data = bytes(self.buf) + data  # a control line the last read cut
            self.buf.clear()
        pos, end = 0, len(data)
        while True:
            if self.state != AWAITING_CONTROL_LINE:
                # A payload nats-py's parser is waiting for: give it that much, no more.
                missing = self.needed + 2 - len(self.buf)
                if end - pos < missing:
                    await super().parse(data[pos:])
                    return
                await super().parse(data[pos : pos + missing])
                pos += missing
            pos = await self._messages(data, pos)
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break  # nothing more, or a control line not complete yet
            # Anything else: nats-py's parser, one control line (and the payload it announces).
            await super().parse(data[pos : eol + 2])
            pos = eol + 2
            if self.buf:
                # nats-py's parser did not take the line (too long to be refused yet): as
                # nats-py does, keep it with what follows until more comes.
                break
        if pos < end:
            self.buf.extend(data[pos:])

    async def _messages(self, data: bytes, pos: int) -> int:
        """Hand on the ``MSG`` lines from ``pos`` on; returns where something else starts (or
        ``len(data)`` once nats-py's parser has a payload cut by the end of ``data``)."""
        nc = self._client
        fast_paths = nc._fast_paths
        stats = nc.stats
        end = len(data)
        match = _MSG.match
        while msg := match(data, pos):
            subject, sid, reply, size = msg.groups()
            start = msg.end()
            stop = start + int(size)
            if stop + 2 > end:
                # The payload is not all here yet: nats-py's parser keeps it as it comes (in
                # one growing buffer, not copied again at each read).
                await super().parse(data[pos:])
                return end
            payload = data[start:stop]
            pos = stop + 2
            fast = fast_paths.get(int(sid))
            if fast is None:
                await nc._process_msg(int(sid), subject, reply or b"", payload, b"")
            else:
                stats["in_msgs"] += 1
                stats["in_bytes"] += stop - start
                fast(subject, reply or b"", payload)
        return pos


def parser_problems() -> list[str]:
    """What :class:`FastParser` relies on in nats-py's parser and no longer finds; empty if
    all (``natsadapter.incompatibilities`` reports them)."""
    found = []
    parser = Parser(None)
    for name, kind in (("buf", bytearray), ("state", int), ("needed", int)):
        if not isinstance(getattr(parser, name, None), kind):
            found.append(f"Parser has no {name} of type {kind.__name__}")
    for line in (b"MSG a.b 12 _INBOX.c 345\r\n", b"MSG a.b 12 345\r\n"):
        ours, theirs = _MSG.match(line), MSG_RE.match(line)
        parts = ours.groups() if ours else None
        if theirs is None or parts != theirs.group(1, 2, 4, 5):
            found.append(f"nats-py's MSG_RE no longer reads {line!r} as FastParser does")
    return found
