"""The bots the peers benchmark runs on one ngircd: Sopel, errbot and eeveepy.

Sopel and errbot run from a venv of their own (``make bench-peers`` creates ``.bench/peers``),
each with an ``!echo`` plugin written into a temporary directory and flood control off, as one
process each. eeveepy runs as a user would run it: ``eevee up`` on the project's default
configuration (``config/eevee.toml``) plus one IRC connector with flood control off, its tree
being the supervisor, nats-server, the fork server and every operator.

Every bot is a context manager: its start is bounded (the process must stay alive and join
its channel, else the start fails with the process's output) and its stop too (SIGTERM, then
SIGKILL; the whole process tree).
"""

from __future__ import annotations

import contextlib
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil

from eeveepy.aio import ENV_LOOP
from tests.operator_procs import stop_all
from tests.supervisor_fixtures import ROOT, System

__all__ = ["PEERS", "Running", "eeveepy", "errbot", "output", "peers_missing", "process", "sopel"]

PEERS = ("sopel", "errbot")
_OWNER = "bencher"


class Running:
    """A started bot: its nick, its channel and the roots of its process tree."""

    def __init__(self, name: str, nick: str, channel: str, roots: list[psutil.Process]) -> None:
        self.name, self.nick, self.channel = name, nick, channel
        self.roots = roots

    def tree(self) -> list[psutil.Process]:
        """Every live process of the bot now (the roots and all their descendants)."""
        procs: dict[int, psutil.Process] = {}
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                procs[root.pid] = root
                for child in root.children(recursive=True):
                    procs[child.pid] = child
        return list(procs.values())

    def pss(self) -> tuple[int, int]:
        """(PSS in bytes of the whole tree, number of processes)."""
        total, count = 0, 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_full_info().pss
                count += 1
        return total, count


def peers_missing(python: Path) -> str:
    """Why the peers cannot run from ``python`` ("" when they can)."""
    if not python.exists():
        return f"{python} does not exist (`make bench-peers` creates the peers' venv)"
    done = subprocess.run(
        [str(python), "-c", "import sopel, errbot, irc"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return f"sopel / errbot[irc] not importable by {python}: {done.stderr.strip()[-300:]}"
    return ""


@contextlib.contextmanager
def process(
    argv: list[str], workdir: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A peer's process, its output in ``workdir/<name>.log``; stopped on exit (with any
    children it made)."""
    with (workdir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(proc.pid).children(recursive=True)
        stop_all([proc], timeout=10)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def output(workdir: Path, name: str) -> str:
    """The end of a peer's log."""
    with contextlib.suppress(OSError):
        return (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
    return ""


# -- Sopel ------------------------------------------------------------------------------------

_SOPEL_PLUGIN = """\
from sopel import plugin


@plugin.command("echo")
def echo(bot, trigger):
    bot.say(trigger.group(2) or "")
"""

# Sopel refuses to run as root; the real entry point with only that check replaced.
_SOPEL_MAIN = (
    "import sys, sopel.cli.run as r; r.check_not_root = lambda: None;"
    " sys.argv[0] = 'sopel'; sys.exit(r.main())"
)


@contextlib.contextmanager
def sopel(python: Path, port: int, channel: str, workdir: Path) -> Iterator[Running]:
    """Sopel 8 with an echo plugin, flood control off."""
    home = workdir / "sopel"
    (home / "plugins").mkdir(parents=True)
    (home / "plugins" / "echo.py").write_text(_SOPEL_PLUGIN)
    config = home / "bench.cfg"
    config.write_text(
        textwrap.dedent(f"""\
        [core]
        nick = sopel
        user = sopel
        name = sopel
        host = 127.0.0.1
        port = {port}
        use_ssl = false
        owner = {_OWNER}
        channels = "{channel}"
        prefix = \\!
        homedir = {home}
        logdir = {home}/logs
        pid_dir = {home}
        logging_level = WARNING
        enable = echo
        flood_burst_lines = 1000000
        flood_refill_rate = 1000000
        flood_empty_wait = 0
        flood_max_wait = 0
        flood_penalty_ratio = 0
        antiloop_threshold = 0
        """)
    )
    argv = [str(python), "-c", _SOPEL_MAIN, "start", "-c", str(config)]
    with process(argv, workdir, "sopel") as proc:
        yield Running("Sopel", "sopel", channel, [psutil.Process(proc.pid)])


# -- errbot -----------------------------------------------------------------------------------

_ERRBOT_PLUGIN = """\
from errbot import BotPlugin, botcmd


class Echo(BotPlugin):
    \"\"\"!echo TEXT answers TEXT.\"\"\"

    @botcmd
    def echo(self, msg, args):
        return args
"""

_ERRBOT_PLUGFILE = """\
[Core]
Name = Echo
Module = echo

[Documentation]
Description = answers !echo TEXT with TEXT

[Python]
Version = 3
"""


@contextlib.contextmanager
def errbot(python: Path, port: int, channel: str, workdir: Path) -> Iterator[Running]:
    """errbot 6 on its IRC backend with an echo plugin, flood control off."""
    home = workdir / "errbot"
    plugins = home / "plugins" / "echo"
    plugins.mkdir(parents=True)
    (home / "data").mkdir()
    (plugins / "echo.py").write_text(_ERRBOT_PLUGIN)
    (plugins / "echo.plug").write_text(_ERRBOT_PLUGFILE)
    (home / "config.py").write_text(
        textwrap.dedent(f"""\
        import logging
        BACKEND = "IRC"
        BOT_DATA_DIR = {str(home / "data")!r}
        BOT_EXTRA_PLUGIN_DIR = {str(home / "plugins")!r}
        BOT_LOG_FILE = {str(home / "errbot.log")!r}
        BOT_LOG_LEVEL = logging.WARNING
        BOT_ADMINS = ("{_OWNER}!*@*",)
        BOT_IDENTITY = {{"nickname": "errbot", "username": "errbot",
                         "server": "127.0.0.1", "port": {port}}}
        CHATROOM_PRESENCE = ("{channel}",)
        BOT_PREFIX = "!"
        IRC_CHANNEL_RATE = 0
        IRC_PRIVATE_RATE = 0
        """)
    )
    errbot_bin = python.parent / "errbot"
    argv = [str(errbot_bin), "-c", str(home / "config.py")]
    with process(argv, workdir, "errbot") as proc:
        yield Running("errbot", "errbot", channel, [psutil.Process(proc.pid)])


# -- eeveepy ----------------------------------------------------------------------------------


def eeveepy_config(port: int, channel: str, nick: str = "eevee", tree: Path = ROOT) -> str:
    """The default configuration of the checkout ``tree`` plus one IRC connector (flood
    control off)."""
    default = (tree / "config" / "eevee.toml").read_text(encoding="utf-8")
    settings = (
        f'host = "127.0.0.1", port = {port}, nick = "{nick}", channels = ["{channel}"],'
        " egress_lines = 0"
    )
    table = f'[operators."irc.bench"]\nmodule = "operators.irc"\nsettings = {{ {settings} }}\n'
    return f"{default}\n{table}"


@contextlib.contextmanager
def eeveepy(
    port: int, channel: str, workdir: Path, loop: str = "auto", tree: Path | None = None
) -> Iterator[tuple[Running, System]]:
    """``eevee up`` on the default configuration plus the IRC connector; its operators on
    the event loop ``loop`` (``EEVEE_LOOP``: auto, uvloop or asyncio). ``tree``: the code of
    another checkout of eeveepy instead of this one (its ``PYTHONPATH`` and its default
    configuration), to compare two versions in one run."""
    nick = "eevee" if loop == "auto" else f"eevee-{loop}"
    name = "eeveepy" if loop == "auto" else f"eeveepy ({loop})"
    if tree is not None:
        nick, name = f"{nick}-base", f"{name} at {tree.name}"
    system = System(workdir / nick)
    system.env[ENV_LOOP] = loop
    if tree is not None:
        system.env["PYTHONPATH"] = str(tree.resolve())
    config = eeveepy_config(port, channel, nick, tree.resolve() if tree is not None else ROOT)
    system.config.write_text(config, encoding="utf-8")
    try:
        system.up("router", "echo", "irc.bench", timeout=60)
        yield Running(name, nick, channel, [system.process]), system
    finally:
        system.stop()
