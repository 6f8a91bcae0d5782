"""The ``eevee`` command: builds a configuration, picks what to run, prints results.

Only this module calls ``sys.exit``. Exit codes: 0 ok, 1 failure (nothing running, unknown
operator, request refused), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eeveepy import __version__
from eeveepy.cli import natsperms
from eeveepy.cli.logs import add_logs_parser, run_logs
from eeveepy.cli.scaffold import add_new_parser
from eeveepy.errors import ConfigError, EeveeError
from eeveepy.logs.setup import configure_logging, configure_supervisor_logging


def _config_path(args: argparse.Namespace) -> Path | None:
    from eeveepy.config import find_config

    return find_config(Path(args.config) if args.config else None)


def _paths(args: argparse.Namespace) -> Any:
    """The installation's paths: from the configuration when there is one."""
    from eeveepy.config import load_config
    from eeveepy.paths import Paths

    try:
        path = _config_path(args)
    except ConfigError:
        return Paths.default()
    if path is None:
        return Paths.default()
    try:
        return load_config(path).resolved_paths()
    except ConfigError:
        return Paths.default()


def _print_problems(exc: ConfigError) -> None:
    print(f"eevee: {exc.args[0] if exc.args else 'invalid configuration'}", file=sys.stderr)
    for where, what in exc.problems:
        print(f"  {where}: {what}", file=sys.stderr)


# -- commands ---------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from eeveepy.config import load_config
    from eeveepy.supervisor.core import Supervisor

    try:
        config = load_config(_config_path(args))
    except ConfigError as exc:
        _print_problems(exc)
        print(
            "eevee: nothing started; fix the configuration (`eevee config check`)", file=sys.stderr
        )
        return 2
    from eeveepy.cli.live import LiveStatus

    supervisor = Supervisor(config)
    live = None
    if sys.stderr.isatty() and not args.json_logs and not args.no_status:
        live = LiveStatus(sys.stderr, lambda: supervisor.status().operators)
    configure_supervisor_logging(
        supervisor.ship,
        json=args.json_logs,
        level=args.log_level,
        stream=live,  # type: ignore[arg-type]
    )

    async def run() -> int:
        if live is not None:
            live.start()
        try:
            return await supervisor.run()
        finally:
            if live is not None:
                await live.stop()
                live.refresh()

    try:
        code = asyncio.run(run())
    except EeveeError as exc:
        print(f"eevee: {exc}", file=sys.stderr)
        return 1
    if supervisor.fatal:
        print(f"eevee: {supervisor.fatal}", file=sys.stderr)
    return code


async def _client(args: argparse.Namespace) -> tuple[Any, Any, dict[str, str]]:
    """Connect to the running supervisor's bus (see :func:`eeveepy.cliclient.connect_cli`)."""
    from eeveepy.cli.client import connect_cli

    return await connect_cli(
        _paths(args), note=lambda text: print(f"eevee: {text}", file=sys.stderr)
    )


def _table(operators: Sequence[Any], color: bool) -> str:
    from eeveepy.cli.live import ps_table

    return ps_table(operators, color)


def cmd_ps(args: argparse.Namespace) -> int:
    from eeveepy.protocol.models import Ping, SupervisorStatus

    async def go() -> SupervisorStatus:
        from eeveepy.cli.client import ask_supervisor

        nc, ipc, to = await _client(args)
        try:
            return await ask_supervisor(
                ipc, "status", Ping(), SupervisorStatus, timeout=3, headers=to
            )
        finally:
            await nc.close()

    status = asyncio.run(go())
    for warning in status.warnings:
        print(f"eevee: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps([op.model_dump(mode="json") for op in status.operators], indent=2))
    else:
        print(_table(status.operators, sys.stdout.isatty()))
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from eeveepy.protocol.models import Control, ControlAction, ControlResult

    async def go() -> ControlResult:
        from eeveepy.cli.client import ask_supervisor

        nc, ipc, to = await _client(args)
        try:
            action = Control(action=ControlAction(args.action), target=args.target)
            return await ask_supervisor(
                ipc, "ctl", action, ControlResult, timeout=args.timeout, headers=to
            )
        finally:
            await nc.close()

    result = asyncio.run(go())
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        if result.operators:
            print(_table(result.operators, sys.stdout.isatty()))
        if result.message:
            print(result.message, file=sys.stderr if not result.ok else sys.stdout)
    return 0 if result.ok else 1


def cmd_down(args: argparse.Namespace) -> int:
    import contextlib
    import os
    import signal
    import time

    import psutil

    from eeveepy.errors import BusDownError
    from eeveepy.protocol.models import Control, ControlAction, ControlResult
    from eeveepy.supervisor.core import read_state

    state = read_state(_paths(args))

    async def go() -> ControlResult:
        from eeveepy.cli.client import ask_supervisor

        nc, ipc, to = await _client(args)
        try:
            shutdown = Control(action=ControlAction.SHUTDOWN, target="all")
            return await ask_supervisor(ipc, "ctl", shutdown, ControlResult, timeout=3, headers=to)
        finally:
            await nc.close()

    pid = int(state["pid"])
    try:
        asyncio.run(go())
    except BusDownError as exc:  # the same graceful stop, asked by signal
        print(f"eevee: {exc}\neevee: sending SIGTERM to eevee (pid {pid}) instead", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            # A zombie has exited; only its parent has not reaped it yet.
            gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        if gone:
            print("eevee is down")
            return 0
        time.sleep(0.05)
    print(f"eevee (pid {pid}) is still stopping after {args.timeout:g} s", file=sys.stderr)
    return 1


def cmd_logs(args: argparse.Namespace) -> int:
    return run_logs(args, _client)


def cmd_chat(args: argparse.Namespace) -> int:
    from eeveepy.cli.chat import run_chat

    return run_chat(args, _client, _paths(args))


def cmd_config_check(args: argparse.Namespace) -> int:
    from eeveepy.config import check_config

    path = _config_path(args)
    problems = check_config(path)
    if args.json:
        print(
            json.dumps(
                {
                    "config": str(path) if path else None,
                    "problems": [{"where": w, "what": m} for w, m in problems],
                },
                indent=2,
            )
        )
    elif problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for where, what in problems:
            print(f"  {where}: {what}", file=sys.stderr)
    else:
        print(f"{path or 'built-in defaults'}: ok")
    return 2 if problems else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from eeveepy.protocol import schema

    if args.check:
        problems = schema.drift(Path(args.out))
        for p in problems:
            print(f"{args.out}/{p}", file=sys.stderr)
        if problems:
            print("run `make schemas` to regenerate", file=sys.stderr)
        return 1 if problems else 0
    if args.out == "-":
        print(json.dumps(schema.schemas(), indent=2, sort_keys=True))
        return 0
    for path in schema.write(Path(args.out)):
        print(path)
    return 0


def cmd_pub(args: argparse.Namespace) -> int:
    async def go() -> None:
        nc, ipc, _ = await _client(args)
        try:
            data = args.payload.encode() if args.payload is not None else sys.stdin.buffer.read()
            await ipc.publish_raw(args.subject, data)
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(go())
    return 0


def cmd_sub(args: argparse.Namespace) -> int:
    async def go() -> None:
        nc, ipc, _ = await _client(args)
        done = asyncio.Event()
        count = 0

        async def on_msg(msg: Any) -> None:
            nonlocal count
            text = msg.data.decode("utf-8", errors="replace")
            if args.json:
                print(json.dumps({"subject": msg.subject, "data": text}), flush=True)
            else:
                print(f"{msg.subject}  {text}", flush=True)
            count += 1
            if args.count and count >= args.count:
                done.set()

        await nc.subscribe(ipc.full(args.subject), cb=on_msg)
        try:
            await done.wait()
        finally:
            await nc.close()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``eevee`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="eevee",
        description="A chat-ops bot of operator processes on a NATS bus.",
        epilog="Start with `eevee up`; then `eevee ps` in another terminal.",
    )
    parser.add_argument("--version", action="version", version=f"eevee {__version__}")
    parser.add_argument(
        "-c", "--config", help="configuration file (default: $EEVEE_CONFIG, ./config/eevee.toml)"
    )
    # `-c` is accepted before or after the command (`eevee -c X up` and `eevee up -c X`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", parents=[common], help="start the bus and the operators (foreground)")
    up.add_argument("--json-logs", action="store_true", help="log JSON lines instead of text")
    up.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    up.add_argument("--no-status", action="store_true", help="no live status block on a terminal")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", parents=[common], help="stop a running `eevee up` gracefully")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    down.set_defaults(func=cmd_down)

    ps = sub.add_parser(
        "ps", parents=[common], help="list operators with state, pid, uptime, memory, ping"
    )
    ps.add_argument("--json", action="store_true", help="print a JSON list")
    ps.set_defaults(func=cmd_ps)

    ctl = sub.add_parser(
        "ctl", parents=[common], help="halt, resume, reload, restart, stop or start operators"
    )
    ctl.add_argument("action", choices=["halt", "resume", "reload", "restart", "stop", "start"])
    ctl.add_argument("target", help="operator id, or `all`")
    ctl.add_argument("--json", action="store_true", help="print the result as JSON")
    ctl.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the result")
    ctl.set_defaults(func=cmd_ctl)

    logs = add_logs_parser(sub, [common])
    logs.set_defaults(func=cmd_logs)

    chat = sub.add_parser(
        "chat",
        parents=[common],
        help="talk to the bot as a console user (a REPL; from a pipe, one message per line)",
    )
    chat.add_argument("--user", "-u", help="your name in the chat (default: $USER)")
    chat.add_argument("--room", "-r", default="#console", help="room (default: #console)")
    chat.add_argument("--private", "-p", action="store_true", help="talk to the bot privately")
    chat.add_argument(
        "--timeout", type=float, default=5.0, help="piped: seconds to wait for a reply (default 5)"
    )
    chat.add_argument("--json", action="store_true", help="print reply envelopes as JSON lines")
    chat.set_defaults(func=cmd_chat)

    config = sub.add_parser("config", parents=[common], help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = config_sub.add_parser(
        "check", parents=[common], help="validate the configuration; list every problem"
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_config_check)
    natsperms.add_parser(config_sub, common)

    schema = sub.add_parser(
        "schema", parents=[common], help="write the JSON Schemas of every envelope kind"
    )
    schema.add_argument("--out", default="schemas", help="directory, or - for stdout")
    schema.add_argument("--check", action="store_true", help="fail if the files are stale")
    schema.set_defaults(func=cmd_schema)

    pub = sub.add_parser("pub", parents=[common], help="publish raw bytes on a subject (debugging)")
    pub.add_argument("subject", help="subject, relative to the prefix (chat.in.console.x.y)")
    pub.add_argument("payload", nargs="?", help="payload (default: standard input)")
    pub.set_defaults(func=cmd_pub)

    subp = sub.add_parser(
        "sub", parents=[common], help="print messages on a subject pattern (debugging)"
    )
    subp.add_argument("subject", help="pattern, relative to the prefix (e.g. `chat.>`)")
    subp.add_argument("--count", type=int, default=0, help="exit after N messages")
    subp.add_argument("--json", action="store_true", help="one JSON object per line")
    subp.set_defaults(func=cmd_sub)

    add_new_parser(sub)  # `eevee new operator NAME [--dir DIR]`
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``eevee`` command."""
    args = build_parser().parse_args(argv)
    if getattr(args, "json_logs", None) is None:
        configure_logging(level="warning")
    try:
        code = args.func(args)
    except ConfigError as exc:
        _print_problems(exc)
        code = 2
    except EeveeError as exc:
        print(f"eevee: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
