"""``eevee chat`` and the console connector, end to end.

One real ``eevee up`` (router, echo, ping and console, as in config/eevee.toml) serves the
module. Scripted sessions pipe lines into ``eevee chat``; REPL sessions run it on a
pseudo-terminal. What sessions publish is checked on the bus itself, with a subscription of
this process (:class:`Tap`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from supervisor_fixtures import EEVEE, System, run_async, wait_for

from eeveepy.cli.terminal import HISTORY_FILE, format_reply
from eeveepy.config import load_config
from eeveepy.console import ConsoleSettings, console_settings, mentions
from eeveepy.protocol.models import MessageStyle, OutgoingMessage

ROOT = Path(__file__).resolve().parents[1]

OPERATORS: dict[str, dict[str, Any]] = {
    "router": {"module": "operators.router", "settings": {"prefixes": ["!"], "names": ["eevee"]}},
    "echo": {"module": "operators.echo"},
    "ping": {"module": "operators.ping"},
    "console": {"module": "operators.console", "settings": {"network": "local"}},
}


def chat(
    system: System, *lines: str, args: tuple[str, ...] = (), timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``eevee chat ARGS`` with ``lines`` piped in (stdin is not a terminal)."""
    return subprocess.run(
        [str(EEVEE), "-c", str(system.config), "chat", *args],
        input="".join(line + "\n" for line in lines),
        env=system.env,
        cwd=system.root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system, once echo and ping are registered with the router."""
    system = System(tmp_path_factory.mktemp("chat") / "sys").write(OPERATORS)
    try:
        system.up(*OPERATORS)

        def registered() -> bool:
            listed = chat(system, "!help", args=("--timeout", "1")).stdout
            return "echo" in listed and "ping" in listed

        wait_for(registered, 20, what="echo and ping to be registered", interval=0.2)
        yield system
    finally:
        system.stop()


class Tap:
    """Every envelope on a subject pattern (relative to the prefix) of a system's bus."""

    def __init__(self, system: System, pattern: str) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        state = json.loads(system.state_file.read_text(encoding="utf-8"))
        self._prefix = state.get("prefix") or "eevee"
        self._nc: Any = run_async(
            nats.connect(
                state["url"], user=state.get("user"), password=state.get("password"), name="tap"
            )
        )
        run_async(self._subscribe(f"{self._prefix}.{pattern}"))

    async def _subscribe(self, subject: str) -> None:
        async def on_msg(msg: Any) -> None:
            self.got.append((msg.subject, json.loads(msg.data)))

        await self._nc.subscribe(subject, cb=on_msg)
        await self._nc.flush()

    def wait(self, predicate: Any, what: str) -> tuple[str, dict[str, Any]]:
        """The first (subject, envelope) for which ``predicate(envelope)`` holds."""

        def find() -> tuple[str, dict[str, Any]] | None:
            return next(((s, e) for s, e in list(self.got) if predicate(e)), None)

        return wait_for(find, 10, what=what)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            run_async(self._nc.close())


@contextlib.contextmanager
def tap(system: System, pattern: str) -> Iterator[Tap]:
    t = Tap(system, pattern)
    try:
        yield t
    finally:
        t.close()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


class Repl:
    """``eevee chat ARGS`` on a pseudo-terminal; :meth:`expect` reads its screen output."""

    def __init__(self, system: System, *args: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            [str(EEVEE), "-c", str(system.config), "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**system.env, "TERM": "xterm"},
            cwd=system.root,
            start_new_session=True,  # and the terminal becomes its controlling one:
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # Ctrl-C is SIGINT
        )
        os.close(slave)
        self.raw = b""
        self.pos = 0

    @property
    def text(self) -> str:
        """Everything shown so far, without terminal escapes and carriage returns."""
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        self.raw += data
        return bool(data)

    def expect(self, wanted: str, timeout: float = 10) -> str:
        """Wait until ``wanted`` is shown (after what earlier calls consumed); return the text
        up to and including it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            at = text.find(wanted, self.pos)
            if at >= 0:
                seen, self.pos = text[self.pos : at + len(wanted)], at + len(wanted)
                return seen
            if time.monotonic() >= deadline or not self._read(0.1):
                raise AssertionError(f"{wanted!r} not shown; the screen so far:\n{text}")

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def wait(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)


@contextlib.contextmanager
def repl(system: System, *args: str) -> Iterator[Repl]:
    session = Repl(system, *args)
    try:
        yield session
    finally:
        session.close()


# -- scripted: stdin is not a terminal -------------------------------------------------------------


def test_a_piped_ping_prints_pong(bot: System) -> None:
    result = chat(bot, "!ping")
    assert (result.returncode, result.stdout, result.stderr) == (0, "pong\n", "")


def test_each_line_gets_its_replies_in_order(bot: System) -> None:
    result = chat(bot, "!echo one", "", "   ", "!ping", "eevee: echo two", "@eevee echo three")
    assert result.returncode == 0, result
    assert result.stdout == "one\npong\ntwo\nthree\n"


def test_an_unknown_command_gets_the_hint(bot: System) -> None:
    result = chat(bot, "!nope")
    assert result.returncode == 0, result
    assert result.stdout == "unknown command `nope`; try `!help`\n"


def test_a_line_nobody_answers_is_reported_and_fails_only_when_strict(bot: System) -> None:
    started = time.monotonic()
    result = chat(bot, "just chatting", "!ping", args=("--timeout", "0.5"))
    assert result.returncode == 0, result  # many lines are answered by nothing: carol++
    assert result.stdout == "pong\n"
    assert result.stderr == "no reply to: just chatting\n"
    strict = chat(bot, "just chatting", "!ping", args=("--timeout", "0.5", "--strict"))
    assert strict.returncode == 1, strict
    assert strict.stderr == "no reply to: just chatting\n"
    assert time.monotonic() - started < 15


def test_the_line_is_a_console_chat_message_from_the_user(bot: System) -> None:
    with tap(bot, "chat.in.console.>") as seen:
        result = chat(bot, "!echo hi eevee", args=("--user", "alice", "--json"))
        subject, sent = seen.wait(lambda e: e["body"]["text"] == "!echo hi eevee", "the line")
    assert result.returncode == 0, result
    assert subject == "eevee.chat.in.console.local.#console"
    assert (sent["kind"], sent["source"]) == ("chat.message", "console")
    body = sent["body"]
    assert (body["platform"], body["network"], body["room"]) == ("console", "local", "#console")
    assert body["user"]["name"] == "alice"
    assert re.fullmatch(r"alice-\d+", body["user"]["id"]), body
    assert body["private"] is False
    assert body["mentioned"] is True
    assert body["message_id"]
    # --json: the reply envelopes, one per line, carrying the message's trace.
    (line,) = result.stdout.splitlines()
    reply = json.loads(line)
    assert (reply["kind"], reply["source"]) == ("chat.out", "echo")
    assert reply["headers"]["trace"] == sent["id"]
    assert reply["body"]["target"] == "#console"
    assert reply["body"]["text"] == "hi eevee"
    assert reply["body"]["reply_to"] == body["message_id"]


def test_private_lines_go_to_the_bot_alone(bot: System) -> None:
    with tap(bot, "chat.>") as seen:
        result = chat(bot, "echo psst", args=("--private", "-u", "bob"))
        subject, sent = seen.wait(lambda e: e["body"].get("text") == "echo psst", "the line")
        _, out = seen.wait(lambda e: e["kind"] == "chat.out" and e["body"]["text"] == "psst", "")
    assert (result.returncode, result.stdout) == (0, "psst\n"), result
    user_id = sent["body"]["user"]["id"]
    assert sent["body"]["room"] == user_id
    assert sent["body"]["private"] is True
    assert sent["body"]["mentioned"] is False
    assert subject == f"eevee.chat.in.console.local.{user_id}"
    assert (out["body"]["private"], out["body"]["target"]) == (True, user_id)


def test_a_room_of_ones_own(bot: System) -> None:
    with tap(bot, "chat.in.console.>") as seen:
        result = chat(bot, "!ping", args=("--room", "#ops.team"))
        subject, _ = seen.wait(lambda e: e["body"]["room"] == "#ops.team", "the line")
    assert (result.returncode, result.stdout) == (0, "pong\n"), result
    assert subject == "eevee.chat.in.console.local.#ops%2Eteam"


def test_without_a_running_system_it_says_to_start_one(tmp_path: Path) -> None:
    system = System(tmp_path / "idle").write(OPERATORS)
    result = chat(system, "!ping")
    assert result.returncode == 1, result
    assert "no running eevee found" in result.stderr
    assert "start one with `eevee up`" in result.stderr
    assert result.stdout == ""


# -- the REPL on a terminal --------------------------------------------------------------------


def test_the_repl_shows_the_prompt_and_the_replies(bot: System) -> None:
    history = bot.state_dir / HISTORY_FILE
    with repl(bot, "--user", "dana") as session:
        assert "dana in #console" in session.expect("you> ")
        session.send("!ping")
        assert "eevee> pong" in session.expect("you> ")
        session.send("/help")
        assert "/quit" in session.expect("you> ")
        session.send("/quit")
        assert session.wait() == 0
    assert "!ping" in history.read_text(encoding="utf-8").splitlines()


def test_repl_sessions_share_the_room_but_not_private_replies(bot: System) -> None:
    with repl(bot, "-u", "ann") as ann:
        ann.expect("you> ")
        with repl(bot, "-u", "carl") as carl:
            carl.expect("you> ")
            assert "* carl joined #console" in ann.expect("carl joined #console")
            carl.send("!echo from carl")
            assert "eevee> from carl" in carl.expect("you> ")
            assert "carl> !echo from carl" in ann.expect("carl> !echo from carl")
            assert "eevee> from carl" in ann.expect("eevee> from carl")
            private = chat(bot, "echo secret of carl", args=("--private", "-u", "carl"))
            assert private.stdout == "secret of carl\n", private
            carl.send("/quit")
            assert carl.wait() == 0
        ann.expect("carl left #console")
        ann.send("!echo done")
        ann.expect("eevee> done")
        ann.expect("you> ")  # typed before the prompt is back, Ctrl-D would be lost
        assert "secret" not in ann.text
        ann.send("\x04")  # Ctrl-D
        assert ann.wait() == 0


def test_the_repl_connects_again_after_eevee_restarts(tmp_path: Path) -> None:
    """`eevee down` and up again under an open REPL: it says the bus is gone, waits, connects
    to the new system and the next line is answered (and nothing is lost on the way)."""
    system = System(tmp_path / "sys").write(OPERATORS)
    try:
        system.up(*OPERATORS)
        with repl(system, "--user", "erin") as session:
            session.expect("you> ")
            session.send("!echo before")
            assert "eevee> before" in session.expect("you> ")
            system.stop()
            system.proc = None
            session.send("!echo during")
            session.expect("connecting again (Ctrl-C gives up)", timeout=15)
            system.up(*OPERATORS)
            session.expect("eevee: connected again", timeout=20)
            # The line typed while the bus was down is sent once connected; the router may
            # still be taking registrations, so ask again until echo answers.
            deadline = time.monotonic() + 20
            while "eevee> again" not in session.text and time.monotonic() < deadline:
                session.send("!echo again")
                with contextlib.suppress(AssertionError):
                    session.expect("eevee> again", timeout=2)
            assert "eevee> again" in session.text
            session.send("/quit")
            assert session.wait() == 0
    finally:
        system.stop()


# -- the console operator ----------------------------------------------------------------------


def test_the_console_operator_announces_the_connection(bot: System) -> None:
    assert bot.op("console")["state"] == "RUNNING"
    with tap(bot, "chat.event.console.>") as seen:
        result = bot.cli("ctl", "restart", "console")
        assert result.returncode == 0, result
        subject, event = seen.wait(lambda e: e["body"]["event"] == "connected", "connected")
    assert subject == "eevee.chat.event.console.local.connected"
    assert event["source"] == "console"
    assert event["body"]["user"]["name"] == "eevee"
    bot.wait_state("console", "RUNNING")


# -- pieces ------------------------------------------------------------------------------------


def test_console_settings_come_from_the_default_configuration() -> None:
    settings = console_settings(load_config(ROOT / "config" / "eevee.toml"))
    assert settings == ConsoleSettings(network="local", bot_name="eevee")


def test_mentions_are_whole_words() -> None:
    assert mentions("hey Eevee!", "eevee")
    assert mentions("@eevee: ping", "eevee")
    assert not mentions("eevees", "eevee")


def test_replies_are_labelled_by_style() -> None:
    def out(text: str, style: MessageStyle = MessageStyle.MESSAGE, private: bool = False) -> Any:
        return OutgoingMessage(
            platform="console", network="local", target="x", text=text, style=style, private=private
        )

    assert format_reply(out("a\nb"), "eevee") == "eevee> a\neevee> b"
    assert format_reply(out("waves", MessageStyle.ACTION), "eevee") == "* eevee waves"
    assert format_reply(out("slow", MessageStyle.NOTICE), "eevee") == "-eevee- slow"
    assert format_reply(out("psst", private=True), "eevee", mark=True) == "eevee (private)> psst"
