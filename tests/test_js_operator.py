"""The JavaScript example operator, ``operators/js/hello.mjs``, written from docs/protocol.md.

(1) On the session nats-server with the real router: readiness, ``!hello``, ``!help hello``,
pings, invalid invocations (error reply and dead letter), SIGHUP, SIGTERM; and every envelope
it published validates against the JSON Schema of its kind and with eeveepy's decoder.
(2) Under a real ``eevee up``: RUNNING with pings answered, reloaded in place, restarted after
kill -9.

Needs ``node`` (skipped without it) and ``operators/js/node_modules``, which ``make`` installs
(``npm ci``) before the tests: its absence is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
from supervisor_fixtures import alive, system_factory, wait_for

from eeveepy.protocol.codec import EnvelopeDecoder, EnvelopeEncoder
from eeveepy.protocol.models import (
    ChatMessage,
    ChatUser,
    CommandInvocation,
    CommandResult,
    DeadLetter,
    Envelope,
    ErrorReply,
    OutgoingMessage,
    Ping,
    Pong,
    Ready,
    body_model,
)
from eeveepy.protocol.subjects import Subjects
from tests.operator_procs import OperatorProc, contract_env

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "operators" / "js"
HELLO = JS_DIR / "hello.mjs"
SCHEMAS = ROOT / "schemas"
NODE = shutil.which("node")
WAIT = 5.0

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node (Node.js) is not on PATH: the JavaScript operator cannot run"
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def require_node_modules() -> None:
    """Fail (not skip): node is here, so the operator must be runnable."""
    if not (JS_DIR / "node_modules" / "nats" / "package.json").is_file():
        pytest.fail(
            "operators/js/node_modules is missing: run `make` (`make test` installs it with "
            "`npm ci --prefix operators/js`) or `make operators/js/node_modules`",
            pytrace=False,
        )


class Proc(OperatorProc):
    """An operator process with its stderr collected."""

    async def logged(self, event: str) -> dict[str, Any]:
        """Wait until the operator logs a JSON line with ``event``; return it."""
        for _ in range(int(WAIT / 0.02)):
            for line in self.lines():
                with contextlib.suppress(ValueError):
                    if (record := json.loads(line)).get("event") == event:
                        return dict(record)
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.id} never logged {event!r}:\n{self.stderr.decode()}")


class Harness:
    """The test's bus connection (playing the connector) and the operator processes.

    Records what is published where an operator publishes (chat, registrations, ready, dead
    letters, logs) and every reply on ``_INBOX.>``, so each envelope the JavaScript operator
    publishes can be checked afterwards.
    """

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.prefix = "js" + uuid.uuid4().hex[:12]
        self.subjects = Subjects(self.prefix)
        self.encoder = EnvelopeEncoder("irc.libera")
        self.procs: list[Proc] = []
        self.seen: list[tuple[str, bytes]] = []
        self.answers: defaultdict[str, asyncio.Queue[Envelope[OutgoingMessage]]] = defaultdict(
            asyncio.Queue
        )
        self.nc: Any = None

    async def start(self) -> None:
        self.nc = await nats.connect(self.url, name="test-js")
        out = EnvelopeDecoder(OutgoingMessage)

        async def record(msg: Any) -> None:
            self.seen.append((msg.subject, msg.data))
            if msg.subject.startswith(f"{self.prefix}.chat.out."):
                env = out.decode(msg.data, msg.subject)
                await self.answers[env.body.reply_to or ""].put(env)

        # Not `{p}.>`: a subscriber to command.run.* would hide "no responders" from the router.
        patterns = ("chat.>", "command.register.>", "operator.ready.>", "dlq.>", "log.>")
        for pattern in patterns:
            await self.nc.subscribe(f"{self.prefix}.{pattern}", cb=record)
        await self.nc.subscribe("_INBOX.>", cb=record)
        await self.nc.flush()

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.procs))
        await self.nc.close()

    async def spawn(self, op_id: str, argv: list[str], **env: str) -> tuple[Proc, Ready]:
        """Start ``argv`` as operator ``op_id`` with the env contract; wait for its Ready."""
        environ = contract_env(
            url=self.url, prefix=self.prefix, op_id=op_id, tmp=self.tmp, settings={}, **env
        )
        ready: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_ready(msg: Any) -> None:
            await ready.put(msg.data)

        sub = await self.nc.subscribe(self.subjects.operator_ready(op_id), cb=on_ready)
        await self.nc.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=environ,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        child = Proc(op_id, proc)
        self.procs.append(child)
        try:
            payload = await asyncio.wait_for(ready.get(), WAIT * 2)
        except TimeoutError:
            await child.stop()
            raise AssertionError(f"{op_id}: no Ready; stderr:\n{child.stderr.decode()}") from None
        finally:
            await sub.unsubscribe()
        return child, EnvelopeDecoder(Ready).decode(payload).body

    # -- chat -------------------------------------------------------------------------------

    def chat(self, text: str, *, user: str = "alice", private: bool = False) -> ChatMessage:
        return ChatMessage(
            platform="irc",
            network="libera",
            room=user if private else "#ops",
            user=ChatUser(id=user, name=user.capitalize()),
            text=text,
            private=private,
            message_id="m-" + uuid.uuid4().hex[:12],
        )

    async def say(self, text: str, *, trace: str | None = None, **kw: Any) -> str:
        """Publish a chat message as a connector would; returns its message id."""
        msg = self.chat(text, **kw)
        _, payload = self.encoder.encode(msg, {"trace": trace} if trace else None)
        await self.nc.publish(self.subjects.chat_in("irc", "libera", msg.room), payload)
        assert msg.message_id is not None
        return msg.message_id

    async def answer(self, mid: str, wait: float = WAIT) -> Envelope[OutgoingMessage]:
        try:
            return await asyncio.wait_for(self.answers[mid].get(), wait)
        except TimeoutError:
            logs = "\n".join(f"--- {p.id}\n{p.stderr.decode()[-3000:]}" for p in self.procs)
            raise AssertionError(f"no answer to {mid}\n{logs}") from None

    async def ask(self, text: str, **kw: Any) -> str:
        return (await self.answer(await self.say(text, **kw))).body.text

    async def wait_help(self, name: str) -> str:
        """Ask ``help <name>`` until the router knows the command; return its help line."""
        for _ in range(int(WAIT * 2 / 0.1)):
            mid = await self.say(f"help {name}", user="u" + uuid.uuid4().hex[:8], private=True)
            text = (await self.answer(mid)).body.text
            if not text.startswith("unknown command"):
                return text
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} never registered")

    async def request(self, subject: str, payload: bytes) -> bytes:
        reply = await self.nc.request(subject, payload, timeout=WAIT)
        return bytes(reply.data)


@contextlib.asynccontextmanager
async def harness(url: str, tmp: Path) -> AsyncIterator[Harness]:
    h = Harness(url, tmp)
    await h.start()
    try:
        yield h
    finally:
        await h.close()


def schema_validators() -> dict[str, Any]:
    jsonschema = pytest.importorskip("jsonschema")
    out: dict[str, Any] = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        cls = jsonschema.validators.validator_for(doc, default=jsonschema.Draft202012Validator)
        out[path.name] = cls(doc, format_checker=cls.FORMAT_CHECKER)
    return out


def check_envelopes(seen: list[tuple[str, bytes]], source: str) -> set[str]:
    """Every envelope ``source`` published is valid for its kind; returns the kinds seen."""
    validators = schema_validators()
    kinds: set[str] = set()
    for subject, payload in seen:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("source") != source:
            continue
        kind = data["kind"]
        kinds.add(kind)
        assert list(data) == ["v", "source", "kind", "id", "timestamp", "headers", "body"]
        assert TIMESTAMP.match(data["timestamp"]), data["timestamp"]
        assert datetime.fromisoformat(data["timestamp"]).utcoffset() is not None
        for name in (f"{kind}.schema.json", "envelope.schema.json"):
            errors = [e.message for e in validators[name].iter_errors(data)]
            assert errors == [], f"{subject}: {name} rejects {payload!r}: {errors}"
        model = body_model(kind)
        assert model is not None, kind
        EnvelopeDecoder(model).decode(payload, subject)
    return kinds


async def test_hello_with_the_router(nats_url: str, tmp_path: Path) -> None:
    require_node_modules()
    assert NODE is not None
    settings_file = tmp_path / "hello.json"
    settings_file.write_text('{"greeting": "hello"}', encoding="utf-8")
    op_id = "hello.js-" + uuid.uuid4().hex[:6]  # two tokens: the id goes last in subjects
    async with harness(nats_url, tmp_path) as h:
        router_id = "router." + uuid.uuid4().hex[:8]
        (_, _), (hello, ready) = await asyncio.gather(
            h.spawn(router_id, [sys.executable, "-m", "operators.router"]),
            h.spawn(
                op_id,
                [NODE, str(HELLO)],
                EEVEE_SETTINGS='{"greeting": "hello"}',
                EEVEE_SETTINGS_FILE=str(settings_file),
            ),
        )
        assert (ready.operator, ready.pid) == (op_id, hello.proc.pid)
        assert await h.wait_help("hello") == "!hello [NAME] — Greet NAME, or you."
        assert await h.ask("!help hello") == "!hello [NAME] — Greet NAME, or you."

        # In the room, with the original trace.
        mid = await h.say("!hello bob", trace="trace-js-1")
        reply = await h.answer(mid)
        assert reply.body.text == "hello, bob!"
        assert reply.headers["trace"] == "trace-js-1"
        assert (reply.source, reply.body.target, reply.body.private) == (op_id, "#ops", False)
        assert (reply.body.platform, reply.body.network, reply.body.reply_to) == (
            "irc",
            "libera",
            mid,
        )
        assert await h.ask("!hello") == "hello, Alice!"  # the user's (display) name
        assert await h.ask("!hello two words") == "usage: !hello [NAME]"
        private = await h.answer(await h.say("hello", user="carol", private=True))
        assert (private.body.text, private.body.target, private.body.private) == (
            "hello, Carol!",
            "carol",
            True,
        )

        # Its ping answers with a pong carrying the ping's trace.
        ping_id, ping = h.encoder.encode(Ping())
        pong = EnvelopeDecoder(Pong).decode(await h.request(h.subjects.operator_ping(op_id), ping))
        assert (pong.body.operator, pong.body.state, pong.source) == (op_id, "running", op_id)
        assert pong.trace == ping_id

        # Invoked directly (no trace header: the trace is the invocation's id).
        run = h.subjects.command_run("hello")
        inv = CommandInvocation(command="hello", message=h.chat("!hello", user="dave"))
        inv_id, payload = h.encoder.encode(inv)
        result = EnvelopeDecoder(CommandResult).decode(await h.request(run, payload))
        assert (result.body.ok, result.trace) == (True, inv_id)
        direct = await h.answer(inv.message.message_id or "")
        assert (direct.body.text, direct.trace) == ("hello, Dave!", inv_id)

        # An invalid invocation: `error` reply and a dead letter.
        head = {"v": 1, "source": "x", "kind": "command.run", "id": "b1"}
        body = {"command": "hello"}  # no message
        bad = json.dumps({**head, "timestamp": "2026-01-01T00:00:00Z", "body": body}).encode()
        error = EnvelopeDecoder(ErrorReply).decode(await h.request(run, bad))
        assert (error.body.error, error.trace) == ("invalid", "b1")
        assert error.body.message == "body.message: Field required"
        dlq = [p for s, p in h.seen if s == h.subjects.dlq(run)]
        assert dlq, "no dead letter"
        letter = EnvelopeDecoder(DeadLetter).decode(dlq[-1]).body
        assert (letter.subject, letter.receiver, letter.payload) == (run, op_id, bad.decode())
        error = EnvelopeDecoder(ErrorReply).decode(await h.request(run, b"\xff\x00"))
        assert (error.body.error, error.body.message) == ("invalid", "payload is not JSON")
        dlq = [p for s, p in h.seen if s == h.subjects.dlq(run)]
        letter = EnvelopeDecoder(DeadLetter).decode(dlq[-1]).body
        assert (letter.payload, letter.encoding, letter.size) == ("/wA=", "base64", 2)

        # SIGHUP re-reads EEVEE_SETTINGS_FILE; invalid settings keep the old ones.
        settings_file.write_text('{"greeting": "hi"}', encoding="utf-8")
        hello.proc.send_signal(signal.SIGHUP)
        await hello.logged("reloaded")
        assert await h.ask("!hello bob") == "hi, bob!"
        settings_file.write_text('{"greeting": 3}', encoding="utf-8")
        hello.proc.send_signal(signal.SIGHUP)
        await hello.logged("reload failed: keeping the old settings")
        assert await h.ask("!hello bob") == "hi, bob!"

        # SIGTERM: drained, exit 0, nobody serves the command any more.
        assert await hello.stop() == 0
        assert await h.ask("!hello bob") == (
            "`hello` is unavailable right now (its operator is not running)"
        )

        kinds = check_envelopes(h.seen, op_id)
        assert kinds == {
            "ready",
            "command.register",
            "chat.out",
            "pong",
            "command.result",
            "error",
            "dlq",
        }
        for line in hello.lines():  # JSON lines the supervisor relays with their level
            record = json.loads(line)
            assert record["level"] in LEVELS, line
            assert isinstance(record["event"], str), line
        assert json.loads(hello.lines()[-1])["event"] == "stopped"


def test_hello_under_eevee_up(tmp_path: Path) -> None:
    require_node_modules()
    with system_factory(tmp_path) as make:
        system = make().write(
            {
                "hello": {"command": ["node", str(HELLO)], "settings": {"greeting": "hey"}},
                "router": {"module": "operators.router"},
                "console": {"module": "operators.console"},
            }
        )
        system.up("hello", "router", "console")
        # Under the bus permissions of a command operator: it registers (on its own subject)
        # and answers in chat.
        said = wait_for(
            lambda: system.cli("chat", input="!hello bob\n").stdout.strip() or None,
            15,
            what="hello to answer in chat",
        )
        assert said == "hey, bob!"
        first = system.wait_op(
            "hello",
            lambda s: s["state"] == "RUNNING" and s["ping_ms"] is not None,
            what="a ping answered by hello",
        )
        proc = psutil.Process(first["pid"])
        assert proc.cmdline()[-1] == str(HELLO)
        assert proc.environ()["EEVEE_OPERATOR_ID"] == "hello"
        # Its JSON stderr lines are relayed as records (level and fields kept), not raw text.
        wait_for(lambda: "command=hello" in system.log(), 5, what="hello's ready log record")

        # A reload (SIGHUP) is handled in place: same process.
        done = system.cli("ctl", "reload", "hello")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: "greeting=hey" in system.log(), 5, what="hello to log its reload")
        assert system.op("hello")["pid"] == first["pid"]

        proc.kill()
        after = system.wait_op(
            "hello",
            lambda s: s["state"] == "RUNNING" and s["pid"] not in (None, first["pid"]),
            what="hello restarted after kill -9",
        )
        assert after["restarts"] == first["restarts"] + 1
        wait_for(lambda: not alive(proc), 5, what="the killed process to be gone")
        system.wait_op(
            "hello",
            lambda s: s["pid"] == after["pid"] and s["ping_ms"] is not None,
            what="a ping answered by the new hello",
        )
