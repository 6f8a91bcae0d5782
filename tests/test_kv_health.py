"""Key-value writes that fail are reported (degraded in pongs and `eevee ps`, error in the logs),
kept and retried until stored: a real nats-server whose JetStream writes are made to fail, and
the karma operator as a real process voting through it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client as NatsClient
from structlog.testing import capture_logs

from eeveepy.bus.client import barrier
from eeveepy.bus.ipc import Ipc
from eeveepy.bus.names import kv_bucket_name
from eeveepy.bus.natsserver import EmbeddedNats
from eeveepy.errors import StoreError
from eeveepy.protocol.models import ChatMessage, ChatUser, Ping, Pong
from eeveepy.protocol.subjects import Subjects
from eeveepy.runtime.health import HealthState, OperatorHealth
from eeveepy.runtime.kvstore import Bucket, KvStore
from operators import karma
from tests.operator_procs import OperatorProc, contract_env, start_operator
from tests.supervisor_fixtures import System, run_async, standalone_nats, wait_for

WAIT = 20.0


def vote_line(text: str, user: str = "alice") -> ChatMessage:
    return ChatMessage(
        platform="irc",
        network="libera",
        room="#ops",
        user=ChatUser(id=user, name=user),
        text=text,
    )


async def stored_score(nc: NatsClient, op_id: str, thing: str, prefix: str) -> int | None:
    """The score the bucket holds for ``thing`` (None: no entry), read past the operator."""
    kv = await nc.jetstream().key_value(kv_bucket_name(op_id, prefix))
    try:
        entry = await kv.get(karma.karma_key("irc", "libera", thing))
    except nats.js.errors.KeyNotFoundError:
        return None
    return karma.score_of(entry.value)


# -- the operator alone, its store made read-only ---------------------------------------------


def chattr_works(where: Path) -> bool:
    """Whether this filesystem and user can set the immutable attribute (ext4 and root: yes;
    tmpfs, overlayfs or no CAP_LINUX_IMMUTABLE: no)."""
    probe = where / "chattr-probe"
    probe.mkdir()
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    subprocess.run(["chattr", "-i", str(probe)], capture_output=True, check=False)
    probe.rmdir()
    return done.returncode == 0


def immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], check=True)


class Karma:
    """A private nats-server, karma as a process on it, and the test as its connector."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = EmbeddedNats(store_dir=tmp / "nats")
        self.subjects = Subjects("kvh" + uuid.uuid4().hex[:6])
        self.op_id = "karma"
        self.ipc = Ipc(self.subjects, "irc.libera")
        self.proc: OperatorProc | None = None

    async def start(self) -> None:
        await self.server.start()
        await self.ipc.attach(await nats.connect(self.server.url, name="test-kv-health"))
        env = contract_env(
            url=self.server.url, prefix=self.subjects.prefix, op_id=self.op_id, tmp=self.tmp
        )
        self.proc = await start_operator("operators.karma", env)
        await self.pong()  # it answers pings once its subscriptions are in place

    async def close(self) -> None:
        immutable(self.server.store_dir, False)
        if self.proc is not None:
            await self.proc.stop()
        with contextlib.suppress(Exception):
            nc = self.ipc.nc
            await self.ipc.detach()
            await nc.close()
        await self.server.stop()

    async def pong(self) -> Pong:
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            try:
                reply = await self.ipc.request(
                    self.subjects.operator_ping(self.op_id), Ping(), Pong, timeout=1
                )
                return reply.body  # type: ignore[no-any-return]
            except Exception:
                assert self.proc is not None
                assert self.proc.proc.returncode is None, self.proc.log()
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def health_is(self, health: str) -> Pong | None:
        pong = await self.pong()
        return pong if pong.health == health else None

    async def vote(self, text: str) -> None:
        await self.ipc.publish(self.subjects.chat_in("irc", "libera", "#ops"), vote_line(text))
        await barrier(self.ipc.nc)

    async def until(self, what: str, check: Any) -> Any:
        deadline = asyncio.get_running_loop().time() + WAIT
        while not (got := await check()):
            assert self.proc is not None
            assert asyncio.get_running_loop().time() < deadline, f"{what}\n{self.proc.log()}"
            await asyncio.sleep(0.1)
        return got


@pytest_asyncio.fixture
async def lone_karma(tmp_path: Path) -> AsyncIterator[Karma]:
    if not chattr_works(tmp_path):
        pytest.skip("chattr +i is not available here (filesystem or privileges)")
    system = Karma(tmp_path)
    try:
        await system.start()
        yield system
    finally:
        await system.close()


async def test_votes_survive_a_read_only_store(lone_karma: Karma) -> None:
    """The store is made read-only with ``chattr -R +i`` on the server's JetStream directory
    (chmod does not stop root; the immutable attribute does). nats-server then fails its write
    ("Critical write error") and disables JetStream; once the attribute is gone, a
    configuration reload (SIGHUP, what the bus's keeper does) turns JetStream on again.
    Meanwhile karma stays up, reports itself degraded, keeps the votes and stores them later."""
    k = lone_karma
    nc = k.ipc.nc
    await k.vote("python++")
    prefix = k.subjects.prefix
    await k.until("the first vote stored", lambda: stored_score(nc, k.op_id, "python", prefix))
    assert (await k.pong()).health == "ok"

    immutable(k.server.store_dir / "jetstream", True)
    await k.vote("python++ rust++")
    await k.vote("python++")
    degraded = await k.until("degraded", lambda: k.health_is("degraded"))
    assert degraded.state == "running"
    assert degraded.problem.startswith("kv: ")
    assert "not stored yet, retrying" in degraded.problem
    assert k.proc is not None
    assert k.proc.proc.returncode is None

    immutable(k.server.store_dir / "jetstream", False)
    assert k.server.pid is not None
    os.kill(k.server.pid, signal.SIGHUP)
    await k.until("healthy again", lambda: k.health_is("ok"))
    assert await stored_score(nc, k.op_id, "python", k.subjects.prefix) == 3
    assert await stored_score(nc, k.op_id, "rust", k.subjects.prefix) == 1
    logged = [json.loads(line) for line in k.proc.lines() if line.startswith("{")]
    errors = [e for e in logged if e.get("level") == "error" and e.get("event") == "unhealthy"]
    assert errors, k.proc.log()
    assert any(e.get("event") == "healthy again" for e in logged), k.proc.log()


# -- under `eevee up`: the bucket full, `eevee ps` shows it ------------------------------------


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[System, str]]:
    with standalone_nats(tmp_path / "nats") as url:
        system = System(tmp_path / "sys")
        system.write({"karma": {"module": "operators.karma"}}, bus_url=url, prefix="kvps")
        try:
            system.up("karma")
            yield system, url
        finally:
            system.stop()


async def _set_bucket_limit(url: str, full: bool) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"KV_{kv_bucket_name('karma', 'kvps')}")
        config = info.config
        config.max_bytes = info.state.bytes if full else -1
        await js.update_stream(config)
    finally:
        await nc.close()


async def _vote_and_read(url: str, text: str | None, thing: str) -> int | None:
    nc = await nats.connect(url)
    try:
        if text is not None:
            ipc = Ipc(Subjects("kvps"), "irc.libera")
            await ipc.attach(nc)
            await ipc.publish(ipc.subjects.chat_in("irc", "libera", "#ops"), vote_line(text))
            await barrier(nc)
        return await stored_score(nc, "karma", thing, "kvps")
    finally:
        await nc.close()


def test_ps_shows_a_degraded_kv_operator_until_its_writes_are_stored(
    supervised: tuple[System, str],
) -> None:
    """The write fails because karma's bucket is full: its stream's ``max_bytes`` is set to
    what it holds, so JetStream refuses new keys ("maximum bytes exceeded"), as with a quota
    reached. `eevee ps` shows karma degraded while it keeps the vote, then ok once the limit
    is lifted and the vote is stored."""
    system, url = supervised
    run_async(_vote_and_read(url, "first++", "first"))
    wait_for(lambda: run_async(_vote_and_read(url, None, "first")), 10, what="the first vote")
    pid = system.op("karma")["pid"]

    run_async(_set_bucket_limit(url, full=True))
    run_async(_vote_and_read(url, "second++", "second"))
    status = system.wait_op("karma", lambda s: s["health"] == "degraded", what="degraded")
    assert "maximum bytes exceeded" in status["problem"]
    assert (status["state"], status["pid"]) == ("RUNNING", pid)
    table = system.cli("ps").stdout
    assert "DEGRADED: kv: 1 key-value write not stored yet" in table, table
    (listed,) = json.loads(system.cli("ps", "--json").stdout)
    assert listed["health"] == "degraded"
    assert run_async(_vote_and_read(url, None, "second")) is None

    run_async(_set_bucket_limit(url, full=False))
    status = system.wait_op("karma", lambda s: s["health"] == "ok", what="healthy again")
    assert (status["problem"], status["pid"], status["restarts"]) == ("", pid, 0)
    assert run_async(_vote_and_read(url, None, "second")) == 1
    assert "DEGRADED" not in system.cli("ps").stdout


# -- op.store's rules, against the shared server --------------------------------------------------


def _count(old: bytes | None) -> bytes:
    return str(int(old or b"0") + 1).encode()


def _broken(old: bytes | None) -> bytes:
    raise ValueError("not a number")


async def test_store_keeps_writes_in_order_until_the_bucket_exists(nats_url: str) -> None:
    """A bucket that does not exist yet refuses every write, as a broken store would: writes
    are kept (a put replacing the put before it, updates in order), reads see them, and they
    are stored once the bucket is there; a failing update function is dropped, not retried."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = "kvstore_" + uuid.uuid4().hex[:8]

    async def bucket() -> Bucket:
        return Bucket(js, name)

    log = structlog.get_logger("test")
    health = OperatorHealth(lambda: log)
    store = KvStore(bucket, health, lambda: log, retry_initial=0.05, retry_max=0.2)
    try:
        with capture_logs() as logs:
            assert await store.put("a", b"1") is False
            assert health.state is HealthState.DEGRADED
            assert health.problem.startswith("kv: 1 key-value write not stored yet, retrying")
            assert await store.put("a", b"2") is False
            assert await store.modify("n", _count) is False
            assert await store.modify("n", _count) is False
            assert await store.modify("bad", _broken) is False
            assert store.pending == 4
            with pytest.raises(StoreError, match="cannot read 'a'"):
                await store.get("a")
            await js.create_key_value(bucket=name)
            assert await store.get("n") == b"2"  # stored or not yet: the writes are applied
            assert await store.flush(WAIT)
            assert health.state is HealthState.OK
        kv = await js.key_value(name)
        assert (await kv.get("a")).value == b"2"
        assert (await kv.get("n")).value == b"2"
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("bad")
        assert await store.put("b", b"now") is True
        assert store.pending == 0
        events = [(e["log_level"], e["event"]) for e in logs]
        assert events.count(("error", "unhealthy")) == 1  # once, not on every retry
        assert ("error", "key-value update failed: write dropped") in events
        assert ("info", "healthy again") in events
    finally:
        await store.close()
        with contextlib.suppress(Exception):
            await js.delete_key_value(name)
        await nc.close()


async def test_store_bounds_what_it_keeps_and_says_what_is_lost(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def bucket() -> Bucket:
        return Bucket(js, "kvstore_missing_" + uuid.uuid4().hex[:8])

    log = structlog.get_logger("test")
    store = KvStore(bucket, OperatorHealth(lambda: log), lambda: log, max_pending=1)
    try:
        with capture_logs() as logs:
            assert await store.put("a", b"1") is False
            assert await store.put("b", b"1") is False
            assert (store.pending, store.dropped) == (1, 1)
            await store.close(timeout=0.2)
        lost = [e for e in logs if e["event"].startswith("key-value writes lost at stop")]
        assert lost
        assert (lost[0]["log_level"], lost[0]["lost"], lost[0]["keys"]) == ("error", 1, ["a"])
        assert any(e["event"].startswith("key-value write refused") for e in logs)
    finally:
        await nc.close()
