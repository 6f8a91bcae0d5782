"""One TCP (or TLS) connection to an IRC server: read a line, write a line, close.

Every byte the connector writes goes through :meth:`Connection.write`, which takes a line
built by :func:`~operators.irc.lines.format_line` (no CR, LF or NUL inside), cuts it to the
512-byte limit without splitting a UTF-8 character and adds CR LF. A write waits for the server
only when much is buffered, and gives up (closing the connection) when the server takes
nothing for :data:`SEND_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Final, TypeVar

from structlog.typing import FilteringBoundLogger

from eeveepy.tls import client_context
from operators.irc.settings import IrcSettings

__all__ = ["Connection", "Silence"]

T = TypeVar("T")

SEND_TIMEOUT: Final = 15.0
"""Seconds a write may wait for the server to take what is buffered."""
DRAIN_ABOVE: Final = 64 * 1024
"""Bytes buffered in the socket before a write waits for the server to take them."""
READ_LIMIT: Final = 1 << 16
"""Longest line read (IRCv3 tags included); a longer one is skipped."""
MAX_LINE: Final = 510
"""Bytes of a line before CR LF."""


class Connection:
    """An open connection; ``log`` returns the operator's current logger."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        log: Callable[[], FilteringBoundLogger],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._log = log
        self._silence = Silence()

    @classmethod
    async def open(cls, s: IrcSettings, log: Callable[[], FilteringBoundLogger]) -> Connection:
        """Connect to ``s.host``/``s.port`` (with TLS when ``s.tls``) within the timeout."""
        ctx = None
        if s.tls:
            ctx = client_context(
                ca_file=s.ca_file, verify=s.tls_verify, cert=s.client_cert, key=s.client_key
            )
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                s.host, s.port, ssl=ctx, server_hostname=s.host if ctx else None, limit=READ_LIMIT
            ),
            s.connect_timeout,
        )
        return cls(reader, writer, log)

    async def read_line(self, timeout: float) -> str | None:
        """The next line as received (CR LF included); ``""`` for a line too long to read
        (skipped), None at the end of the stream. Raises :class:`TimeoutError` after
        ``timeout`` seconds without a line."""
        try:
            data = await self._silence.bound(self._reader.readline(), timeout)
        except ValueError:  # over the stream limit: readline skipped it
            self._log().warning("irc line too long: skipped")
            return ""
        if not data:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")

    async def write(self, line: str) -> bool:
        """Write one line now; False when the connection is closed or the write failed."""
        if not self.put(line):
            return False
        return await self.drain() if self.backlogged else True

    def put(self, line: str) -> bool:
        """Buffer one line for the socket without waiting; False when the connection is
        closed. Then :meth:`drain` if :attr:`backlogged`."""
        writer = self._writer
        if writer.is_closing():
            return False
        data = line.encode("utf-8")
        if len(data) > MAX_LINE:
            cut = MAX_LINE
            while data[cut] & 0xC0 == 0x80:  # never cut before a continuation byte
                cut -= 1
            data = data[:cut]
        writer.write(data + b"\r\n")
        return True

    @property
    def backlogged(self) -> bool:
        """More is buffered than the server should be left to take at its pace."""
        return self._writer.transport.get_write_buffer_size() > DRAIN_ABOVE

    async def drain(self) -> bool:
        """Wait until the server took the backlog; False (the connection closed) when it
        takes nothing for :data:`SEND_TIMEOUT` seconds or the write failed."""
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            self._log().warning("irc write failed: closing", error=str(exc) or repr(exc))
            self._writer.close()
            return False
        return True

    async def close(self) -> None:
        """Close the connection, waiting at most a second for it to be closed."""
        self._silence.stop()
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass  # closing anyway: a reset or a slow TLS goodbye changes nothing


class Silence:
    """The bound on the wait for each line, on one timer for the whole connection.

    ``asyncio.timeout`` per line makes a timer, looks the task up and cancels the timer again
    for every line read (microseconds each, on every chat line). Here a line only moves the
    deadline; the timer, when it fires before the deadline, is set again for it, and only a
    deadline passed while a read waits cancels that read (into :class:`TimeoutError`, as
    ``asyncio.timeout`` does, never swallowing a cancellation of its own).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._deadline = 0.0
        self._waiting = False
        self._expired = False

    async def bound(self, read: Coroutine[object, object, T], timeout: float) -> T:
        """Await ``read``; :class:`TimeoutError` once ``timeout`` seconds passed."""
        loop = self._loop
        if loop is None:  # (the first read: the connection's loop and its reading task)
            loop = self._loop = asyncio.get_running_loop()
        task = self._task
        if task is None:
            task = self._task = asyncio.current_task()
            assert task is not None
        self._deadline = deadline = loop.time() + timeout
        if self._timer is None or deadline < self._armed_at:
            self._arm(loop, deadline)
        cancelling = task.cancelling()
        self._waiting = True
        try:
            return await read
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def stop(self) -> None:
        """No more reads: the timer goes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._timer = None
        loop, task = self._loop, self._task
        if loop is None or task is None:
            return
        if loop.time() < self._deadline:
            self._arm(loop, self._deadline)  # a line came meanwhile: the bound moved on
        elif self._waiting and not self._expired:
            self._expired = True
            task.cancel()
