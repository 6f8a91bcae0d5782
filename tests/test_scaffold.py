"""``eevee new operator NAME``: the generated package, its test (run for real) and its lint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eeveepy.cli import scaffold
from eeveepy.cli.main import main
from eeveepy.errors import TargetExistsError

ROOT = Path(__file__).resolve().parents[1]
NAME = "greeter_xq"  # unlikely to be importable already
RUFF = Path(sys.executable).parent / "ruff"


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exc.value.code
    assert isinstance(code, int)
    return code, out, err


def test_new_operator_creates_a_package_whose_test_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli("new", "operator", NAME, "--dir", str(tmp_path), capsys=capsys)
    assert code == 0
    target = tmp_path / f"eevee-{NAME}"
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        f"{NAME}/__init__.py",
        f"{NAME}/__main__.py",
        f"{NAME}/operator.py",
        "pyproject.toml",
        f"tests/test_{NAME}.py",
    ]
    assert f"created {target}" in out
    readme = (target / "README.md").read_text()
    assert f'[operators.{NAME}]\nmodule = "{NAME}"' in readme
    assert "python -m pytest" in readme
    assert "is not enough" not in readme  # an env PYTHONPATH is enough
    assert f'env = {{ PYTHONPATH = "/path/to/eevee-{NAME}" }}' in readme
    assert "eevee reload" in readme
    # The test is the library's TestBot, not hand wiring.
    test_text = (target / "tests" / f"test_{NAME}.py").read_text()
    assert "from eeveepy.testing import TestBot" in test_text
    assert len(test_text.splitlines()) < 30

    # The generated test, run as its author would: pytest in the package's directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EEVEE_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT)])
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"tests/test_{NAME}.py"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "1 passed" in test.stdout

    # `python -m NAME` is a runnable operator (its development options, at least).
    usage = subprocess.run(
        [sys.executable, "-m", NAME, "--help"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert usage.returncode == 0, usage.stderr
    assert "--nats-url" in usage.stdout

    # Lint-clean under its own settings (pyproject.toml) and the ruff of this project.
    for cmd in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        lint = subprocess.run(
            [str(RUFF), *cmd], cwd=target, capture_output=True, text=True, timeout=30
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_an_existing_directory_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / f"eevee-{NAME}"
    mine.mkdir()
    (mine / "mine.txt").write_text("keep me")
    code, _, err = run_cli("new", "operator", NAME, "--dir", str(tmp_path), capsys=capsys)
    assert code == 1
    assert err == f"eevee: {mine} already exists: not overwriting it\n"
    assert [p.name for p in mine.iterdir()] == ["mine.txt"]

    created = scaffold.new_operator("other_op", tmp_path)
    with pytest.raises(TargetExistsError):
        scaffold.new_operator("other_op", tmp_path)
    assert created == tmp_path / "eevee-other_op"


def test_the_project_never_shadows_its_package(tmp_path: Path) -> None:
    """Created where `eevee up` runs, the project's directory is not taken for the package
    (a directory named NAME would be: an empty namespace package hiding the installed one)."""
    scaffold.new_operator(NAME, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EEVEE_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    probe = f"import importlib.util; print(importlib.util.find_spec({NAME!r}))"
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert found.stdout == "None\n", found
    # Installed (here: on the import path), it runs from that same directory.
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / f"eevee-{NAME}"), str(ROOT)])
    usage = subprocess.run(
        [sys.executable, "-m", NAME, "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 0, usage.stderr


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Greeter", "use lowercase ASCII letters"),
        ("my-op", "use lowercase ASCII letters"),
        ("irc.libera", "use lowercase ASCII letters"),
        ("9lives", "use lowercase ASCII letters"),
        ("x" * 65, "64 characters at most"),
        ("class", "Python keyword"),
        ("json", "standard library"),
        ("eeveepy", "taken by eevee"),
        ("help", "taken by eevee"),
        ("pydantic_core", "already importable"),
    ],
)
def test_invalid_names_are_refused(
    name: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli("new", "operator", name, "--dir", str(tmp_path), capsys=capsys)
    assert code == 2
    assert err.startswith(f"eevee: invalid operator name {name!r}: ")
    assert why in err
    assert list(tmp_path.iterdir()) == []  # nothing written
