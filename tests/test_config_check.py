"""``eevee config check`` does everything ``eevee up`` would short of starting: it imports the
modules, finds the executables and has each operator validate its settings, and every problem
points at the file and key of ``eevee.toml``. Run as the real command, in a directory of its
own (relative paths start there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from supervisor_fixtures import isolated_env

CLI = [sys.executable, "-m", "eeveepy.cli.main"]

BROKEN = """\
[operators.weather]
module = "weather_nowhere"

[operators.bot]
command = ["./no-such-bot"]

[operators.notes]
command = ["./notes.txt"]

[operators.tool]
command = ["no-such-tool-xyz"]

[operators.router]
module = "operators.router"
settings = { prefixes = 3 }

[operators.echo]
module = "operators.echo"

[operators.off]
module = "also_nowhere"
enabled = false
"""


def check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "config", "check", "-c", "eevee.toml", *args],
        cwd=root,
        env=isolated_env(root),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def problems_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    data: dict[str, Any] = json.loads(result.stdout)
    return {p["where"]: p["what"] for p in data["problems"]}


def test_what_start_would_meet_is_found_and_located(tmp_path: Path) -> None:
    (tmp_path / "eevee.toml").write_text(BROKEN)
    (tmp_path / "notes.txt").write_text("not a program\n")
    result = check(tmp_path, "--json")
    assert result.returncode == 2, result
    found = problems_of(result)
    assert set(found) == {
        "eevee.toml: operators.weather.module",
        "eevee.toml: operators.bot.command",
        "eevee.toml: operators.notes.command",
        "eevee.toml: operators.tool.command",
        "eevee.toml: operators.router.settings.prefixes",
    }, found
    assert "no module named 'weather_nowhere'" in found["eevee.toml: operators.weather.module"]
    assert "does not exist" in found["eevee.toml: operators.bot.command"]
    assert "not an executable file" in found["eevee.toml: operators.notes.command"]
    assert "not found on PATH" in found["eevee.toml: operators.tool.command"]
    assert "valid list" in found["eevee.toml: operators.router.settings.prefixes"]

    text = check(tmp_path)
    assert text.returncode == 2
    assert text.stderr.splitlines()[0] == "eevee.toml: 5 problem(s)"
    assert "Traceback" not in text.stderr

    static = check(tmp_path, "--static")  # the file alone is valid
    assert static.returncode == 0, static
    assert static.stdout == "eevee.toml: ok\n"


def test_settings_from_operators_d_name_that_file_too(tmp_path: Path) -> None:
    (tmp_path / "eevee.toml").write_text('[operators.router]\nmodule = "operators.router"\n')
    (tmp_path / "operators.d").mkdir()
    (tmp_path / "operators.d" / "router.toml").write_text("prefixes = 3\n")
    found = problems_of(check(tmp_path, "--json"))
    where = "eevee.toml: operators.router.settings.prefixes"
    assert list(found) == [where], found
    assert f"(or in {tmp_path / 'operators.d' / 'router.toml'}: prefixes)" in found[where]


def test_a_string_is_not_a_boolean(tmp_path: Path) -> None:
    (tmp_path / "eevee.toml").write_text(
        '[operators.echo]\nmodule = "operators.echo"\nenabled = "yes"\n'
    )
    found = problems_of(check(tmp_path, "--json"))
    assert list(found) == ["eevee.toml: operators.echo.enabled"], found
    assert "valid boolean" in found["eevee.toml: operators.echo.enabled"]


def test_a_valid_configuration_passes(tmp_path: Path) -> None:
    (tmp_path / "eevee.toml").write_text(
        '[operators.echo]\nmodule = "operators.echo"\n'
        '[operators.router]\nmodule = "operators.router"\nsettings = { prefixes = ["!"] }\n'
        '[operators.sh]\ncommand = ["bash", "-c", "true"]\n'
    )
    result = check(tmp_path)
    assert result.returncode == 0, result
    assert result.stdout == "eevee.toml: ok\n"
