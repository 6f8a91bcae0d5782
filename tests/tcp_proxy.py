"""A TCP proxy on loopback whose connections a test can cut: a network drop, on demand.

``proxy = await TcpProxy.start(host, port)`` listens on ``proxy.port`` and forwards every
connection to ``host:port``; ``proxy.cut()`` aborts every connection through it (both ends
see a reset, as when a network drops), ``proxy.freeze()`` stops moving bytes on the open ones
while they stay open (a half-open connection: the peer went silent), ``proxy.pause()``
refuses new ones until ``resume()``.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards connections from ``127.0.0.1:port`` to an upstream address."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._paused = False
        self._clients: set[asyncio.StreamWriter] = set()
        self._frozen: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, host: str, port: int) -> TcpProxy:
        proxy = cls((host, port))
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._paused:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        self._clients.add(writer)
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, writer)),
            asyncio.ensure_future(self._pump(up_reader, writer, writer)),
        ]
        self._links.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
                self._links.discard(p)
            self._clients.discard(writer)
            self._frozen.discard(writer)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if key in self._frozen:
                    continue  # swallowed: the other end hears nothing
                writer.write(data)
                await writer.drain()

    def freeze(self) -> int:
        """Stop moving bytes on every open connection (they stay open); how many."""
        self._frozen |= self._clients
        return len(self._clients)

    def cut(self) -> int:
        """Abort every connection through the proxy; how many there were."""
        writers = list(self._writers)
        for w in writers:
            w.transport.abort()
        return len(writers) // 2

    def pause(self) -> None:
        """Refuse new connections (those open stay) until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
