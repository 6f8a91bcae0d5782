"""FastParser does what nats-py's parser does with the same bytes, however they are cut.

Each stream is fed to nats-py's own parser and to :class:`FastParser` whole, cut in two at
every byte, and in small random pieces; both must hand the client the same operations in the
same order. Messages of a fast-path subscription count as the ``_process_msg`` call nats-py's
parser would have made for them. A real nats-server then delivers through it in
``test_fast_path_and_nats_py_paths_interleave_in_order``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.protocol.parser import Parser

from eeveepy.bus.client import BusConfig, barrier, connect
from eeveepy.bus.natsadapter import EeveeClient, add_fast_path, add_header_path
from eeveepy.bus.natsparser import FastParser

FAST_SID = 7
Op = tuple[Any, ...]


class Recorder(EeveeClient):
    """An EeveeClient that records what its parser hands it instead of acting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self._fast_paths[FAST_SID] = lambda s, r, d: self.ops.append(("msg", FAST_SID, s, r, d))

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        if headers:
            self.ops.append(("msg", sid, subject, reply, data, headers))
        else:
            self.ops.append(("msg", sid, subject, reply, data))

    async def _process_ping(self) -> None:
        self.ops.append(("ping",))

    async def _process_pong(self) -> None:
        self.ops.append(("pong",))

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        self.ops.append(("info", info))

    async def _process_err(self, err_msg: str) -> None:
        self.ops.append(("err", err_msg))


def _msg(subject: bytes, sid: int, payload: bytes, reply: bytes = b"") -> bytes:
    head = b"MSG %s %d %s%d\r\n" % (subject, sid, reply + b" " if reply else b"", len(payload))
    return head + payload + b"\r\n"


def _hmsg(subject: bytes, sid: int, headers: bytes, payload: bytes) -> bytes:
    size = len(headers) + len(payload)
    return b"HMSG %s %d %d %d\r\n%s%s\r\n" % (subject, sid, len(headers), size, headers, payload)


STREAM = b"".join(
    [
        b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        _msg(b"eevee.chat.in.irc.a", FAST_SID, b'{"v":1}'),
        _msg(b"eevee.chat.in.irc.a", FAST_SID, b"", reply=b"_INBOX.r1"),
        _msg(b"other", 3, b"plain", reply=b"_INBOX.r2"),
        b"PING\r\n",
        _msg(b"eevee.x", FAST_SID, b"MSG eevee.x 7 3\r\nabc\r\n"),  # a line in the payload
        _hmsg(b"stored", FAST_SID, b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n", b"body"),
        _hmsg(b"stored", 3, b"NATS/1.0\r\n\r\n", b""),
        b"+OK\r\n",
        b"MSG  spaced\t%d   11\r\nhello world\r\n" % FAST_SID,  # nats-py's expression takes it
        b"MSG eevee.y 7 _INBOX.x  2\r\nhi\r\n",
        b"PONG\r\n",
        _msg(b"eevee.z", 12345, bytes(range(256)) * 3),
        b"-ERR 'Stale Connection'\r\n",
        _msg(b"eevee.last", FAST_SID, b"end"),
    ]
)


async def _ops(parser_class: type[Parser], pieces: list[bytes]) -> list[Op]:
    nc = Recorder()
    parser = parser_class(nc)
    for piece in pieces:
        await parser.parse(piece)
    assert not parser.buf, "everything was complete: nothing may be left over"
    return nc.ops


async def test_the_same_operations_as_nats_py_however_the_bytes_are_cut() -> None:
    expected = await _ops(Parser, [STREAM])
    assert len([op for op in expected if op[0] == "msg"]) == 10
    assert ("msg", 3, b"other", b"_INBOX.r2", b"plain") in expected
    assert await _ops(FastParser, [STREAM]) == expected
    for cut in range(1, len(STREAM)):
        pieces = [STREAM[:cut], STREAM[cut:]]
        assert await _ops(FastParser, pieces) == expected, f"cut at byte {cut}"
    rng = random.Random(16)
    for _ in range(200):
        pieces, at = [], 0
        while at < len(STREAM):
            n = rng.randint(1, 40)
            pieces.append(STREAM[at : at + n])
            at += n
        assert await _ops(FastParser, pieces) == expected


async def test_a_large_payload_arriving_in_pieces() -> None:
    payload = bytes(random.Random(1).randbytes(300_000))
    stream = _msg(b"big", FAST_SID, payload) + _msg(b"small", FAST_SID, b"after")
    pieces = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    assert await _ops(FastParser, pieces) == await _ops(Parser, [stream])


@pytest.mark.parametrize(
    "bad",
    [b"BOGUS 1 2\r\n", b"MSG subject notasid 5\r\nhello\r\n", b"MSG subject\r\n"],
)
async def test_what_nats_py_refuses_is_refused(bad: bytes) -> None:
    for parser_class in (Parser, FastParser):
        with pytest.raises(nats.errors.ProtocolError):
            await _ops(parser_class, [_msg(b"ok", FAST_SID, b"x") + bad])


async def test_fast_path_and_nats_py_paths_interleave_in_order(nats_url: str) -> None:
    nc = await connect(BusConfig(url=nats_url), name="parser-test")
    try:
        assert isinstance(nc._ps, FastParser)
        got: list[tuple[str, bytes]] = []
        done = asyncio.Event()

        async def plain(msg: Msg) -> None:
            got.append(("plain", msg.data))
            if msg.data == b"398":  # the last one published on parser.plain
                done.set()

        fast_sub = await nc.subscribe("parser.fast", cb=plain)
        add_fast_path(nc, fast_sub, lambda s, r, d: got.append(("fast", d)))
        header_sub = await nc.subscribe("parser.headers", cb=plain)
        add_header_path(nc, header_sub, lambda s, r, d, h: got.append(("headers", d)))
        await nc.subscribe("parser.plain", cb=plain)
        await barrier(nc)
        for i in range(400):
            subject = ("parser.fast", "parser.headers", "parser.plain", "parser.fast")[i % 4]
            headers = {"n": str(i)} if subject == "parser.headers" else None
            await nc.publish(subject, str(i).encode(), headers=headers)
        await nc.flush()
        await asyncio.wait_for(done.wait(), timeout=5)
        for _ in range(100):  # the plain subscription's task may still be handing out
            if len(got) == 400:
                break
            await asyncio.sleep(0.01)
        kinds = ("fast", "headers", "plain", "fast")
        for kind in set(kinds):  # each path in the order published (nats-py's is a task)
            assert [d for k, d in got if k == kind] == [
                str(i).encode() for i in range(400) if kinds[i % 4] == kind
            ], kind
        assert len(got) == 400
    finally:
        await nc.close()
