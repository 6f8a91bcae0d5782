"""The ``eevee`` command: builds a configuration, picks what to run, prints results.

Only this module calls ``sys.exit``. Exit codes: 0 ok, 1 failure (nothing running, unknown
operator, request refused), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eeveepy import __version__
from eeveepy.cli import natsperms, reference
from eeveepy.cli.args import Parser, concrete_subject, count, positive_float, subject_pattern
from eeveepy.cli.logs import add_logs_parser, run_logs
from eeveepy.cli.scaffold import add_new_parser
from eeveepy.errors import ConfigError, EeveeError


def _config_path(args: argparse.Namespace) -> Path | None:
    from eeveepy.config import find_config

    return find_config(Path(args.config) if args.config else None)


def _paths(args: argparse.Namespace) -> Any:
    """The installation's paths: from the configuration when there is one (a file that does
    not load gives the default paths: the running system may still be found there)."""
    from eeveepy.config import load_config
    from eeveepy.paths import Paths

    path = _config_path(args)  # a file named by -c or $EEVEE_CONFIG must exist
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
    from eeveepy.supervisor.unused import skip_unused

    skip_unused()  # before the supervisor imports nats-py and structlog
    from eeveepy.config import load_config
    from eeveepy.logs.setup import configure_supervisor_logging
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

    forked = None
    modules = [o.module for o in config.operators.values() if o.module and o.enabled]
    if config.supervisor.forkserver and modules:
        from eeveepy.supervisor.prefork import prefork

        forked = prefork(modules)  # before any thread or event loop: it shares our pages
    supervisor = Supervisor(config, forked=forked)
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


def cmd_ps(args: argparse.Namespace) -> int:
    from eeveepy.cli.control import cmd_ps as ps

    return ps(args, _client)


def cmd_ctl(args: argparse.Namespace) -> int:
    from eeveepy.cli.control import cmd_ctl as ctl

    return ctl(args, _client)


def cmd_reload(args: argparse.Namespace) -> int:
    from eeveepy.cli.control import cmd_reload as reload

    return reload(args, _client)


def cmd_down(args: argparse.Namespace) -> int:
    from eeveepy.cli.control import cmd_down as down

    return down(args, _client, _paths(args))


def cmd_logs(args: argparse.Namespace) -> int:
    def offline() -> Path | None:
        from eeveepy.config import load_config
        from eeveepy.logs.offline import log_directory

        try:
            config = load_config(_config_path(args))
        except ConfigError:
            return None
        return log_directory(config.operators, config.resolved_paths())

    return run_logs(args, _client, offline)


def cmd_chat(args: argparse.Namespace) -> int:
    from eeveepy.cli.chat import run_chat

    return run_chat(args, _client, _paths(args))


def cmd_config_check(args: argparse.Namespace) -> int:
    from eeveepy.config import check_config, load_config
    from eeveepy.config.verify import verify

    path = _config_path(args)
    problems = check_config(path)
    if not problems and not args.static:
        # What starting would show: modules that do not import, executables not found,
        # settings an operator refuses (each module is run in its settings-check mode).
        problems = asyncio.run(verify(load_config(path), label=str(path)))
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
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(
            f"eevee schema: --out {out} is a file; give a directory (or - for stdout)",
            file=sys.stderr,
        )
        return 2
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
        broken = False

        async def on_msg(msg: Any) -> None:
            nonlocal count, broken
            if done.is_set():
                return  # already delivered to the client before it unsubscribed
            text = msg.data.decode("utf-8", errors="replace")
            try:
                if args.json:
                    print(json.dumps({"subject": msg.subject, "data": text}), flush=True)
                else:
                    print(f"{msg.subject}  {text}", flush=True)
            except BrokenPipeError:  # the reader is gone: so are we (main says nothing)
                broken = True
                done.set()
                return
            count += 1
            if args.count and count >= args.count:
                done.set()

        await nc.subscribe(ipc.full(args.subject), cb=on_msg)
        try:
            await done.wait()
        finally:
            await nc.close()
        if broken:
            raise BrokenPipeError

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``eevee`` argument parser."""
    parser = Parser(
        prog="eevee",
        description="A chat-ops bot of operator processes on a NATS bus.",
        epilog="Start with `eevee up`; then `eevee ps` in another terminal.",
    )
    parser.add_argument("--version", action="version", version=f"eevee {__version__}")
    parser.add_argument(
        "-c", "--config", help="configuration file (default: $EEVEE_CONFIG, ./config/eevee.toml)"
    )
    # `-c` is accepted before or after the command (`eevee -c X up` and `eevee up -c X`).
    common = Parser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help="configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", parents=[common], help="start the bus and the operators (foreground)")
    up.add_argument("--json-logs", action="store_true", help="log JSON lines instead of text")
    up.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    up.add_argument("--no-status", action="store_true", help="no live status block on a terminal")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", parents=[common], help="stop a running `eevee up` gracefully")
    down.add_argument(
        "--timeout", type=positive_float, default=30.0, help="seconds to wait (default 30)"
    )
    down.set_defaults(func=cmd_down)

    ps = sub.add_parser(
        "ps", parents=[common], help="list operators with state, pid, uptime, memory, ping"
    )
    ps.add_argument("ids", nargs="*", metavar="ID", help="only these operators")
    ps.add_argument("--json", action="store_true", help="print a JSON list")
    ps.set_defaults(func=cmd_ps)

    ctl = sub.add_parser(
        "ctl",
        parents=[common],
        help="halt, resume, reload, restart, stop or start operators",
        description="Lifecycle actions on operators. start and restart wait until the"
        " operators are RUNNING (exit 1 when one is not); reload ID sends SIGHUP, the operator"
        " re-reads the settings the supervisor holds (to re-read eevee.toml, use `eevee reload`,"
        " the same as `ctl reload supervisor`).",
    )
    ctl.add_argument("action", choices=["halt", "resume", "reload", "restart", "stop", "start"])
    ctl.add_argument("target", help="operator id, `all`, or `supervisor` (reload only)")
    ctl.add_argument("--json", action="store_true", help="print the result as JSON")
    ctl.add_argument(
        "--timeout", type=positive_float, default=15.0, help="seconds to wait for the result"
    )
    ctl.set_defaults(func=cmd_ctl)

    reload = sub.add_parser(
        "reload",
        parents=[common],
        help="re-read the configuration, check it, print and apply what changed (as SIGHUP)",
    )
    reload.add_argument("--json", action="store_true", help="print the plan or problems as JSON")
    reload.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds to wait (default 60)"
    )
    reload.set_defaults(func=cmd_reload)

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
        "--timeout",
        type=positive_float,
        default=5.0,
        help="piped: seconds to wait for a reply (default 5)",
    )
    chat.add_argument(
        "--strict", action="store_true", help="piped: exit 1 when a line gets no reply"
    )
    chat.add_argument("--json", action="store_true", help="print reply envelopes as JSON lines")
    chat.set_defaults(func=cmd_chat)

    config = sub.add_parser("config", parents=[common], help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = config_sub.add_parser(
        "check", parents=[common], help="validate the configuration; list every problem"
    )
    check.add_argument("--json", action="store_true", help="print the problems as JSON")
    check.add_argument(
        "--static",
        action="store_true",
        help="only the files: do not run operator modules to check their settings",
    )
    check.set_defaults(func=cmd_config_check)
    natsperms.add_parser(config_sub, common)
    reference.add_parser(config_sub, common)

    schema = sub.add_parser(
        "schema", parents=[common], help="write the JSON Schemas of every envelope kind"
    )
    schema.add_argument("--out", default="schemas", help="directory, or - for stdout")
    schema.add_argument("--check", action="store_true", help="fail if the files are stale")
    schema.set_defaults(func=cmd_schema)

    pub = sub.add_parser("pub", parents=[common], help="publish raw bytes on a subject (debugging)")
    pub.add_argument(
        "subject",
        type=concrete_subject,
        help="subject, relative to the prefix (chat.in.console.x.y)",
    )
    pub.add_argument("payload", nargs="?", help="payload (default: standard input)")
    pub.set_defaults(func=cmd_pub)

    subp = sub.add_parser(
        "sub", parents=[common], help="print messages on a subject pattern (debugging)"
    )
    subp.add_argument(
        "subject", type=subject_pattern, help="pattern, relative to the prefix (e.g. `chat.>`)"
    )
    subp.add_argument("--count", type=count, default=0, help="exit after N messages")
    subp.add_argument("--json", action="store_true", help="one JSON object per line")
    subp.set_defaults(func=cmd_sub)

    add_new_parser(sub)  # `eevee new operator NAME [--dir DIR]`
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``eevee`` command: no traceback reaches the user."""
    try:
        args = build_parser().parse_args(argv)  # --help writes too: into a closed pipe, maybe
        if getattr(args, "json_logs", None) is None:
            from eeveepy.logs.setup import configure_logging

            configure_logging(level="warning")
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, while it can still be caught
    except ConfigError as exc:
        _print_problems(exc)
        code = 2
    except EeveeError as exc:
        print(f"eevee: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`eevee logs | head`): what it wanted was written. Point
        # stdout at /dev/null so the interpreter's last flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as exc:  # a bug of ours: one line, and how to see more
        if os.environ.get("EEVEE_DEBUG"):
            raise
        print(
            f"eevee: unexpected error: {exc!r} (EEVEE_DEBUG=1 shows where; please report it)",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover - `python -m eeveepy.cli.main`
    main()
