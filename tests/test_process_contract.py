"""The process contract (docs/protocol.md, eeveepy/runtime/contract.py) as the supervisor keeps it.

An operator in any language relies on it, so it is checked with the bash operator, which has
no eeveepy behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from supervisor_fixtures import System, bash_op, system_factory, wait_for

from eeveepy.runtime.contract import ENV_CACHE_DIR, ENV_DATA_DIR, ENV_OPERATOR_ID


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with system_factory(tmp_path) as make:
        yield make("contract")


def test_cache_dir_is_emptied_before_each_start(system: System, tmp_path: Path) -> None:
    cache = system.root / "xdg-cache" / "eevee" / "operators" / "bash"
    (cache / "sub" / "deeper").mkdir(parents=True)
    (cache / "stale").write_text("x")
    (cache / "sub" / "deeper" / "stale").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("x")
    (cache / "link").symlink_to(outside, target_is_directory=True)

    system.write({"bash": bash_op()}).up("bash")

    status = wait_for(system.status, 5, what="status")
    env = psutil.Process(status["bash"]["pid"]).environ()
    assert env[ENV_OPERATOR_ID] == "bash"
    assert Path(env[ENV_CACHE_DIR]) == cache
    assert Path(env[ENV_DATA_DIR]).is_dir()
    assert cache.is_dir()
    assert list(cache.iterdir()) == []
    assert (outside / "kept").exists(), "a symlink in the cache is removed, not followed"
