"""The IRC connection's writes over a real loopback socket: the lines of one turn of the loop
leave together in one write, in order, each cut to 510 bytes; close sends what was written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from operators.irc.connection import DRAIN_ABOVE, MAX_LINE, Connection


class CountingWriter(asyncio.StreamWriter):
    """asyncio's own writer, counting the writes handed to the transport."""

    writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1
        super().write(data)


class Server:
    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.more = asyncio.Condition()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            async with self.more:
                self.received += data
                self.more.notify_all()
        self.closed.set()
        writer.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Connection, CountingWriter, Server]]:
    server = Server()
    srv = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    reader, plain = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    writer = CountingWriter(plain.transport, plain._protocol, reader, loop)  # type: ignore[attr-defined]
    conn = Connection(reader, writer, structlog.get_logger)
    try:
        yield conn, writer, server
    finally:
        await conn.close()
        srv.close()
        await srv.wait_closed()


async def received(server: Server, n: int) -> list[bytes]:
    async with asyncio.timeout(5), server.more:
        await server.more.wait_for(lambda: server.received.count(b"\r\n") >= n)
    return bytes(server.received).split(b"\r\n")[:-1]


async def test_a_turns_lines_leave_in_one_write_in_order(
    pair: tuple[Connection, CountingWriter, Server],
) -> None:
    conn, writer, server = pair
    long = "PRIVMSG #c :" + "é" * 600  # 1212 bytes: cut at 510, never inside a character
    for n in range(20):
        assert conn.put(f"PRIVMSG #c :line {n}")
    assert conn.put(long)
    assert writer.writes == 0  # nothing yet: at the end of this turn
    lines = await received(server, 21)
    assert writer.writes == 1
    assert lines[:20] == [f"PRIVMSG #c :line {n}".encode() for n in range(20)]
    assert len(lines[20]) in (MAX_LINE, MAX_LINE - 1)
    assert lines[20].decode("utf-8") == long.encode()[: len(lines[20])].decode("utf-8")

    assert await conn.write("PING :x")  # a later turn: a write of its own
    await received(server, 22)
    assert writer.writes == 2


async def test_the_backlog_counts_what_waits_and_close_sends_it(
    pair: tuple[Connection, CountingWriter, Server],
) -> None:
    conn, writer, server = pair
    line = "PRIVMSG #c :" + "x" * 400
    while not conn.backlogged:
        assert conn.put(line)
    assert writer.writes == 0
    assert conn.put("QUIT :bye")
    await conn.close()
    await asyncio.wait_for(server.closed.wait(), 5)
    lines = bytes(server.received).split(b"\r\n")[:-1]
    assert len(lines) > DRAIN_ABOVE // 500
    assert lines[-1] == b"QUIT :bye"
    assert not conn.put("PRIVMSG #c :too late")  # closed: refused, not lost silently
