"""Placement on a real nats-server: a standby takes a lease over from a holder that stopped
renewing it and does not answer, never from one that renews or answers; ``hosts`` pins."""

from __future__ import annotations

import uuid
from pathlib import Path

import nats.errors
import pytest
import structlog
from nats.aio.client import Client as NatsClient
from pydantic import ValidationError

from eeveepy.bus.jetstream import explain
from eeveepy.bus.names import kv_bucket_name, leases_bucket_name
from eeveepy.bus.streams import ensure_chat_in_stream
from eeveepy.config import Config, OperatorConfig
from eeveepy.errors import BusError
from eeveepy.supervisor.leases import Leases
from eeveepy.supervisor.placement import Placement, ensure_leases_bucket, placed_on
from tests.supervisor_fixtures import bash_op, system_factory, wait_for

TTL = 30.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def pair(nc: NatsClient, *, answers: bool) -> tuple[Leases, Placement, Clock, list[str]]:
    """A holder ``a`` (its leases renewed only by hand) and ``b``'s placement."""
    bucket = "placement_" + uuid.uuid4().hex[:10]
    await ensure_leases_bucket(nc.jetstream(), bucket, TTL, 1)
    log = structlog.get_logger("test")
    a, b = [
        await Leases.open(nc, bucket, name, TTL, fresh=False, log=log, on_lost=print)
        for name in ("a", "b")
    ]
    probed: list[str] = []

    async def probe(name: str) -> bool:
        probed.append(name)
        return answers

    clock = Clock()
    return a, Placement(b, probe, log=log, clock=clock), clock, probed


async def test_a_silent_holder_is_taken_over_after_half_the_ttl(nc: NatsClient) -> None:
    a, placement, clock, probed = await pair(nc, answers=False)
    assert await a.acquire("irc.x") is None
    assert await placement.acquire("irc.x") == "supervisor a"
    assert placement.standby == {"irc.x": "a"}
    clock.now += TTL / 2 - 0.1
    assert await placement.acquire("irc.x") == "supervisor a"  # not stale yet
    assert probed == []
    clock.now += 0.2
    assert await placement.acquire("irc.x") is None  # a missed a renewal, does not answer
    assert probed == ["a"]
    assert placement.standby == {}
    assert (await placement.leases.kv.get("irc.x")).value == b"b"
    await a.renew()  # a, back, finds its lease taken: it would stop its copy
    assert "irc.x" not in a.held


async def test_a_renewing_or_answering_holder_keeps_its_lease(nc: NatsClient) -> None:
    a, placement, clock, probed = await pair(nc, answers=False)
    await a.acquire("irc.y")
    await placement.acquire("irc.y")
    clock.now += TTL / 3
    await a.renew()  # a new revision: the silence starts again
    assert await placement.acquire("irc.y") == "supervisor a"
    clock.now += TTL / 3
    assert await placement.acquire("irc.y") == "supervisor a"
    assert probed == []

    a2, answering, clock2, probed2 = await pair(nc, answers=True)
    await a2.acquire("irc.z")
    await answering.acquire("irc.z")
    clock2.now += TTL
    assert await answering.acquire("irc.z") == "supervisor a"  # silent, but it answers
    assert probed2 == ["a"]
    assert (await a2.kv.get("irc.z")).value == b"a"


async def test_replicas_on_a_single_server_are_refused_clearly(nc: NatsClient) -> None:
    js = nc.jetstream()
    bucket = "placement_" + uuid.uuid4().hex[:10]
    with pytest.raises(nats.errors.Error) as caught:
        await ensure_leases_bucket(js, bucket, TTL, 3)
    assert "needs a NATS cluster" in explain(caught.value, 3)
    with pytest.raises(BusError, match=r"\[bus\] replicas = 3 needs a NATS cluster"):
        await ensure_chat_in_stream(js, "single" + uuid.uuid4().hex[:6], replicas=3)
    await ensure_leases_bucket(js, bucket, TTL, 1)
    await ensure_leases_bucket(js, bucket, TTL, 1)  # exists: left alone
    assert (await (await js.key_value(bucket)).status()).ttl == TTL


def test_hosts_pin_an_operator() -> None:
    free = OperatorConfig(id="irc.x", module="operators.irc")
    pinned = OperatorConfig(id="echo.a", module="operators.echo", hosts=["a", "c"])
    assert placed_on(free, "a")
    assert placed_on(free, "b")
    assert placed_on(pinned, "a")
    assert placed_on(pinned, "c")
    assert not placed_on(pinned, "b")


def test_replicas_need_an_external_bus_and_names_carry_the_prefix() -> None:
    with pytest.raises(ValidationError, match=r"replicas = 3 needs a NATS cluster"):
        Config.model_validate({"bus": {"replicas": 3}})
    config = Config.model_validate({"bus": {"url": "nats://a:4222,nats://b:4222", "replicas": 3}})
    assert config.bus.seeds == ["nats://a:4222", "nats://b:4222"]
    assert kv_bucket_name("irc.x-y") == "eevee_irc_x_y"  # the names eeveepy always used
    assert kv_bucket_name("irc.x", "acme.bot") == "acme_bot_irc_x"
    assert leases_bucket_name("acme.bot") == "acme_bot_leases"


def test_a_reload_moves_an_operator_onto_and_off_this_supervisor(tmp_path: Path) -> None:
    with system_factory(tmp_path) as make:
        solo = make("solo")
        pinned = {"bash": bash_op(hosts=["other"]), "here": bash_op()}
        solo.write(pinned, supervisor={"name": "solo"}).up("here")
        assert "bash" not in (solo.status() or {})  # another supervisor's
        moved = {"bash": bash_op(hosts=["solo", "other"]), "here": bash_op()}
        solo.write(moved, supervisor={"name": "solo"})
        assert solo.cli("reload").returncode == 0
        assert solo.wait_state("bash", "RUNNING")["host"] == "solo"
        solo.write(pinned, supervisor={"name": "solo"})
        assert solo.cli("reload").returncode == 0
        wait_for(lambda: "bash" not in (solo.status() or {}), 10, what="bash gone")
        assert solo.op("here")["state"] == "RUNNING"
        solo.write(moved, supervisor={"name": "solo"})  # and back: its bus user still works
        assert solo.cli("reload").returncode == 0
        solo.wait_state("bash", "RUNNING")
