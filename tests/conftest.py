"""Shared fixtures: one embedded nats-server for the whole test session."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

_ROOT = Path(__file__).resolve().parents[1]
# First on the path: the project may not be installed into the venv, or installed from another
# checkout; and pytest puts tests/ first, where tests/operators would stand in for operators.
sys.path.insert(0, str(_ROOT))

# The shared helpers' asserts are rewritten wherever they are first imported (a test module
# or a benchmark module collected before the module that registers them would miss it).
pytest.register_assert_rewrite(
    "tests.irc_servers",
    "tests.xmpp_server",
    "tests.matrix_server",
    "tests.ipc_fixtures",
    "tests.logging_fixtures",
    "tests.logs_fixtures",
    "tests.test_irc",
)

from nats.aio.client import Client as NatsClient  # noqa: E402

import operators  # noqa: E402, F401  (this checkout's, before tests/operators can shadow it)
from eeveepy.bus.client import BusConfig, connect  # noqa: E402
from eeveepy.bus.natsserver import EmbeddedNats  # noqa: E402


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    """One nats-server (no users, JetStream on) shared by every test in the session."""
    server = EmbeddedNats(store_dir=tmp_path_factory.mktemp("nats"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    """The shared server's client URL, ``nats://127.0.0.1:PORT``."""
    return nats_server.url


@pytest_asyncio.fixture(loop_scope="session")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A connection to the shared server for one test (a module may define its own)."""
    client = await connect(BusConfig(url=nats_url), name="tests")
    try:
        yield client
    finally:
        await client.close()
