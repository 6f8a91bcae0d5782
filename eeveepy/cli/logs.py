"""``eevee logs``: its arguments, the filter they make, printing and following.

What is read, and how, is :mod:`eeveepy.logs.history`; this module turns the command line
into a :class:`~eeveepy.logs.history.LogFilter` and prints what comes back, one rendered line
(:func:`~eeveepy.logs.render.render`) or one JSON envelope per record.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from eeveepy.cli.args import count
from eeveepy.errors import BusDownError, LogQueryError, SupervisorError

if TYPE_CHECKING:  # imported when run: the NATS client is not needed to parse arguments
    from eeveepy.logs.history import LogFilter
    from eeveepy.protocol.models import Envelope, LogRecord

__all__ = ["add_logs_parser", "filter_from_args", "parse_since", "run_logs"]

Connect = Callable[[argparse.Namespace], Awaitable[tuple[Any, Any, dict[str, str]]]]
"""Connects to the running system's bus: ``(nats client, ipc, request headers)``."""

_SINCE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SINCE_UNITS: Final = MappingProxyType(
    {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
)


def add_logs_parser(
    sub: argparse._SubParsersAction[Any],
    parents: list[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``logs`` command to ``sub``; the caller sets its ``func``."""
    logs: argparse.ArgumentParser = sub.add_parser(
        "logs", parents=parents, help="show log history from the bus; -f to follow"
    )
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new events (waits through restarts of eevee)",
    )
    logs.add_argument(
        "--operator",
        "-o",
        action="append",
        metavar="ID",
        help="only this operator (repeatable; globs like irc.*)",
    )
    logs.add_argument(
        "--level",
        "-l",
        choices=["debug", "info", "warning", "error", "critical"],
        help="lowest level shown",
    )
    logs.add_argument("--since", help="from this long ago (30s, 10m, 1h, 2d) or an ISO time")
    logs.add_argument("--grep", "-g", metavar="TEXT", help="only events containing TEXT")
    logs.add_argument(
        "--lines",
        "-n",
        type=count,
        default=200,
        help="history lines without --since (default 200)",
    )
    logs.add_argument("--json", action="store_true", help="one envelope per line (JSON)")
    return logs


def parse_since(text: str, now: datetime) -> datetime:
    """A ``--since`` value: a duration ago (``30s``, ``10m``, ``1h``, ``2d``, ``1w``) or an
    ISO 8601 time (naive = UTC). Raises :class:`LogQueryError`."""
    value = text.strip()
    match = _SINCE_RE.fullmatch(value.lower())
    if match is not None:
        amount, unit = float(match.group(1)), match.group(2)
        try:
            return now - timedelta(**{_SINCE_UNITS[unit]: amount})
        except OverflowError:
            raise LogQueryError(f"--since {text!r} is too far back") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise LogQueryError(
            f"--since {text!r}: expected a duration such as 30s, 10m, 1h, 2d or an ISO 8601 "
            "time such as 2026-01-02T15:04:05Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def filter_from_args(args: argparse.Namespace, now: datetime) -> LogFilter:
    """The :class:`LogFilter` of ``eevee logs`` arguments; ``--since`` counts back from ``now``."""
    from eeveepy.logs.history import LogFilter
    from eeveepy.logs.records import level_from_name

    return LogFilter(
        operators=list(args.operator or []),
        min_level=level_from_name(args.level) if args.level else None,
        since=parse_since(args.since, now) if args.since else None,
        grep=args.grep,
    )


def run_logs(args: argparse.Namespace, connect: Connect, offline: Callable[[], Path | None]) -> int:
    """Print the history the arguments ask for and, with ``--follow``, what arrives after it
    until interrupted. History is the last ``--lines`` records, or everything since
    ``--since``; text is coloured on a terminal. Returns the exit code.

    When eevee is not running (or its bus does not answer), the history is read from the
    logging operator's files instead (``offline`` finds their directory), with a note on
    stderr; following needs the bus.
    """
    from eeveepy.logs.history import read_logs
    from eeveepy.logs.offline import read_log_files
    from eeveepy.logs.render import render

    flt = filter_from_args(args, datetime.now(UTC))
    color = sys.stdout.isatty() and not args.json
    tail = None if args.since else args.lines

    def show(env: Envelope[LogRecord]) -> None:
        if args.json:
            print(env.model_dump_json(), flush=args.follow)
        else:
            print(render(env, color=color), flush=args.follow)

    async def go() -> None:
        nc, ipc, _ = await connect(args)
        if not args.follow:
            try:
                async for env in read_logs(
                    nc.jetstream(), ipc.subjects.prefix, flt, follow=False, tail=tail
                ):
                    show(env)
            finally:
                await nc.close()
            return
        await _follow(args, connect, flt, tail, show, (nc, ipc))

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    except (SupervisorError, BusDownError) as exc:
        directory = offline()
        if args.follow or directory is None or not directory.is_dir():
            raise
        print(
            f"eevee: {exc}\neevee: reading the logging operator's files in {directory} instead",
            file=sys.stderr,
        )
        for env in read_log_files(directory, flt, tail):
            show(env)
    return 0


_RESUME_MARGIN: Final = timedelta(seconds=2)
"""How far before the last record shown a resumed follow reads again (clocks of the
operators and of the bus differ a little); what was shown already is skipped by id."""

_RETRY_EVERY: Final = 1.0
"""Seconds between attempts to reach a system that went away while following."""


async def _follow(
    args: argparse.Namespace,
    connect: Connect,
    flt: LogFilter,
    tail: int | None,
    show: Callable[[Envelope[LogRecord]], None],
    first: tuple[Any, Any] | None,
) -> None:
    """Follow the log stream until interrupted, through restarts of the system.

    When the bus goes away (``eevee down`` and up again, a restarted embedded bus), this
    says so once on stderr, tries again every second, and resumes from the last record
    shown: nothing is printed twice, nothing logged meanwhile is missed.
    """
    from eeveepy.errors import BusError
    from eeveepy.logs.history import read_logs

    seen: deque[str] = deque(maxlen=4096)
    seen_ids: set[str] = set()
    current: tuple[Any, Any] | None = first
    last_time: datetime | None = None
    waiting = False
    while True:
        if current is None:
            try:
                nc, ipc, _ = await connect(args)
            except (SupervisorError, BusDownError):
                await asyncio.sleep(_RETRY_EVERY)
                continue
            print("eevee: connected again; following", file=sys.stderr, flush=True)
            waiting = False
        else:
            nc, ipc = current
        lost = False
        since = flt if last_time is None else replace(flt, since=last_time - _RESUME_MARGIN)
        try:
            async for env in read_logs(
                nc.jetstream(),
                ipc.subjects.prefix,
                since,
                follow=True,
                tail=tail if last_time is None else None,
            ):
                if env.id in seen_ids:
                    continue
                if len(seen) == seen.maxlen:
                    seen_ids.discard(seen[0])
                seen.append(env.id)
                seen_ids.add(env.id)
                last_time = env.body.time or env.timestamp
                show(env)
        except BusError as exc:
            if first is not None and not nc.is_closed:
                raise  # not a lost connection: the stream cannot be read at all
            if not waiting:
                print(
                    f"eevee: {exc}; waiting for eevee to come back (Ctrl-C to stop)",
                    file=sys.stderr,
                    flush=True,
                )
            waiting = True
            lost = True
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
        current = first = None
        if last_time is None:
            last_time = datetime.now(UTC)
        if lost:
            await asyncio.sleep(_RETRY_EVERY)
