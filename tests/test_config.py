"""Tests of eeveepy.config and eeveepy.paths: defaults, search order, merging, problem reports."""

from __future__ import annotations

import stat
import sys
import textwrap
from pathlib import Path

import pytest

from eeveepy.config import (
    CONFIG_ENV,
    Config,
    OperatorConfig,
    RestartPolicy,
    SupervisorConfig,
    check_config,
    find_config,
    load_config,
)
from eeveepy.errors import ConfigError, SubjectError
from eeveepy.paths import Paths

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config" / "eevee.toml"
XDG_VARS = ("XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty directory with XDG dirs of its own and no $EEVEE_CONFIG.

    HOME moves too, so platforms whose directories ignore XDG_* stay inside tmp_path as well.
    """
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in XDG_VARS:
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("invalid configuration")
    assert check_config(path) == info.value.problems
    return info.value.problems


def locations(problems: list[tuple[str, str]]) -> list[str]:
    return [where for where, _ in problems]


# -- defaults ----------------------------------------------------------------------------------


def test_no_file_gives_defaults() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.operators == {}
    assert cfg.prefix == "eevee"
    assert cfg.bus.url is None
    assert cfg.source is None
    assert cfg.supervisor.shutdown_timeout == 15
    assert cfg.supervisor.lease_ttl == 10
    assert cfg.supervisor.name is None
    assert check_config(None) == []


def test_operator_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "eevee.toml", '[operators.echo]\nmodule = "operators.echo"\n')
    op = load_config(path).operators["echo"]
    assert op.id == "echo"
    assert op.module == "operators.echo"
    assert op.command is None
    assert op.restart is RestartPolicy.ALWAYS
    assert (op.start_timeout, op.stop_timeout) == (10, 5)
    assert (op.ping_interval, op.ping_timeout, op.max_missed_pings) == (2, 2, 3)
    assert (op.max_restarts, op.restart_window) == (5, 60)
    assert (op.backoff_initial, op.backoff_max, op.healthy_after) == (0.5, 30, 10)
    assert op.enabled is True
    assert op.role is None
    assert op.env == {}
    assert op.settings == {}


def test_source_is_absolute(tmp_path: Path, isolated: Path) -> None:
    write(isolated / "eevee.toml", "")
    cfg = load_config(Path("eevee.toml"))
    assert cfg.source == isolated / "eevee.toml"
    assert cfg.source.is_absolute()


def test_argv() -> None:
    by_module = OperatorConfig(id="echo", module="operators.echo")
    assert by_module.argv("/usr/bin/python3") == ["/usr/bin/python3", "-m", "operators.echo"]
    by_command = OperatorConfig(id="bot", command=["./bot", "--fast"])
    assert by_command.argv() == ["./bot", "--fast"]


# -- search order ------------------------------------------------------------------------------


def test_find_config_search_order(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_config(None) is None

    user = write(Paths.default().config_dir / "eevee.toml", "")
    assert find_config(None) == user

    local = write(isolated / "config" / "eevee.toml", "")
    found = find_config(None)
    assert found == Path("config/eevee.toml")
    assert found.resolve() == local.resolve()

    from_env = write(tmp_path / "env.toml", "")
    monkeypatch.setenv(CONFIG_ENV, str(from_env))
    assert find_config(None) == from_env

    explicit = write(tmp_path / "explicit.toml", "")
    assert find_config(explicit) == explicit


def test_empty_env_var_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, "")
    assert find_config(None) is None


def test_missing_explicit_config_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        find_config(missing)
    assert str(missing) in str(info.value)
    [(where, what)] = info.value.problems
    assert where == str(missing)
    assert "does not exist" in what
    assert "given explicitly" in what


def test_missing_env_config_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(Path("config") / "eevee.toml", "")  # would be found, but $EEVEE_CONFIG comes first
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError) as info:
        find_config(None)
    [(_, what)] = info.value.problems
    assert CONFIG_ENV in what
    assert "does not exist" in what


def test_explicit_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        find_config(tmp_path)


# -- operators.d -------------------------------------------------------------------------------


def test_operators_d_merged_under_inline_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        """
        [operators.echo]
        module = "operators.echo"
        [operators.echo.settings]
        greeting = "inline"
        list = [1]
        [operators.echo.settings.limits]
        burst = 10
        """,
    )
    write(
        tmp_path / "operators.d" / "echo.toml",
        """
        greeting = "file"
        only_in_file = true
        list = [2, 3]
        [limits]
        burst = 5
        per_minute = 20
        """,
    )
    write(tmp_path / "operators.d" / "stranger.toml", "ignored = true\n")
    cfg = load_config(path)
    assert cfg.operators["echo"].settings == {
        "greeting": "inline",
        "only_in_file": True,
        "list": [1],
        "limits": {"burst": 10, "per_minute": 20},
    }
    assert set(cfg.operators) == {"echo"}  # operators.d/stranger.toml is ignored


def test_operators_d_without_inline_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "eevee.toml", '[operators."irc.libera"]\ncommand = ["./irc"]\n')
    write(tmp_path / "operators.d" / "irc.libera.toml", 'nick = "eevee"\n')
    assert load_config(path).operators["irc.libera"].settings == {"nick": "eevee"}


def test_operators_d_syntax_error_names_its_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        '[operators.echo]\nmodule = "operators.echo"\nrestart = "sometimes"\n',
    )
    broken = write(tmp_path / "operators.d" / "echo.toml", 'ok = 1\nnick = "unterminated\n')
    problems = problems_of(path)
    assert locations(problems) == [
        f"{path}: operators.echo.restart",
        f"{broken}: line 2, column 21",
    ]
    assert problems[1][1].startswith("TOML syntax error")


# -- problems ----------------------------------------------------------------------------------


def test_every_problem_is_reported_with_file_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        """
        prefix = "no spaces"
        [bus]
        connect_timeout = -1
        [supervisor]
        lease_ttl = 0
        [operators.echo]
        module = "operators.echo"
        restart = "sometimes"
        ping_interval = "often"
        max_missed_pings = 0
        env = { A = 1 }
        [operators.bot]
        command = []
        """,
    )
    problems = dict(problems_of(path))
    label = str(path)
    assert set(problems) == {
        f"{label}: prefix",
        f"{label}: bus.connect_timeout",
        f"{label}: supervisor.lease_ttl",
        f"{label}: operators.echo.restart",
        f"{label}: operators.echo.ping_interval",
        f"{label}: operators.echo.max_missed_pings",
        f"{label}: operators.echo.env.A",
        f"{label}: operators.bot.command",
    }
    assert "'always', 'on-failure' or 'never'" in problems[f"{label}: operators.echo.restart"]
    assert "'sometimes'" in problems[f"{label}: operators.echo.restart"]
    assert "invalid subject prefix" in problems[f"{label}: prefix"]
    assert "empty" in problems[f"{label}: operators.bot.command"]


def test_location_uses_the_path_as_given(isolated: Path) -> None:
    write(isolated / "config" / "eevee.toml", '[operators.echo]\nmodule = "x"\nrestart = 1\n')
    [(where, _)] = problems_of(Path("config/eevee.toml"))
    assert where == "config/eevee.toml: operators.echo.restart"


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "eevee.toml", "[supervisor]\nlease_ttl = = 3\n")
    [(where, what)] = problems_of(path)
    assert where == f"{path}: line 2, column 13"
    assert what.startswith("TOML syntax error: ")


def test_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    [(where, what)] = problems_of(missing)
    assert where == str(missing)
    assert "cannot read" in what


def test_module_and_command_both_set(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml", '[operators.echo]\nmodule = "operators.echo"\ncommand = ["x"]\n'
    )
    [(where, what)] = problems_of(path)
    assert where == f"{path}: operators.echo.command"
    assert "both module and command" in what


def test_module_and_command_neither_set(tmp_path: Path) -> None:
    path = write(tmp_path / "eevee.toml", "[operators.echo]\nenabled = false\n")
    [(where, what)] = problems_of(path)
    assert where == f"{path}: operators.echo.command"
    assert "neither module nor command" in what


def test_module_problem_reported_with_other_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        '[operators.echo]\nrestart = "sometimes"\nmodule = "a"\ncommand = ["b"]\n',
    )
    assert locations(problems_of(path)) == [
        f"{path}: operators.echo.restart",
        f"{path}: operators.echo.command",
    ]


def test_bad_module_name(tmp_path: Path) -> None:
    path = write(tmp_path / "eevee.toml", '[operators.echo]\nmodule = "operators/echo.py"\n')
    [(where, what)] = problems_of(path)
    assert where == f"{path}: operators.echo.module"
    assert "dotted Python module name" in what


def test_bad_operator_id(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        '[operators."Bad.ID"]\nmodule = "x"\n[operators."ok.id"]\nmodule = "y"\n',
    )
    write(tmp_path / "operators.d" / "Bad.ID.toml", "x = = 1\n")  # never read for a bad id
    [(where, what)] = problems_of(path)
    assert where == f'{path}: operators."Bad.ID"'
    assert "invalid operator id 'Bad.ID'" in what


def test_explicit_id_must_match_table_name(tmp_path: Path) -> None:
    path = write(tmp_path / "eevee.toml", '[operators.echo]\nid = "other"\nmodule = "x"\n')
    [(where, what)] = problems_of(path)
    assert where == str(path)
    assert "operators.echo" in what
    assert "table name" in what


@pytest.mark.parametrize(
    ("toml", "location", "suggestion"),
    [
        (
            '[operators.echo]\nmodule = "x"\nrestrat = "always"\n',
            "operators.echo.restrat",
            "restart",
        ),
        ("[supervisor]\nping_intervall = 3\n", "supervisor.ping_intervall", "ping_interval"),
        ('[bus]\nurl = "nats://x"\npasword = "x"\n', "bus.pasword", "password"),
        ('[paths]\nstatedir = "x"\n', "paths.statedir", "state_dir"),
        ('[operator.echo]\nmodule = "x"\n', "operator", "operators"),
        ('source = "elsewhere.toml"\n', "source", None),
        ("[supervisor]\nzzz = 1\n", "supervisor.zzz", None),
    ],
)
def test_unknown_keys_are_reported(
    tmp_path: Path, toml: str, location: str, suggestion: str | None
) -> None:
    path = write(tmp_path / "eevee.toml", toml)
    [(where, what)] = problems_of(path)
    assert where == f"{path}: {location}"
    assert what.startswith("unknown key")
    if suggestion is None:
        assert "did you mean" not in what
    else:
        assert f"did you mean {suggestion!r}" in what


def test_backoff_initial_above_max(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        '[supervisor]\nbackoff_initial = 40\n[operators.echo]\nmodule = "x"\n',
    )
    [(where, what)] = problems_of(path)  # once, under [supervisor], not again per operator
    assert where == f"{path}: supervisor.backoff_max"
    assert "smaller than backoff_initial" in what


def test_problems_are_not_duplicated(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        """
        [supervisor]
        restart = "sometimes"
        [operators.a]
        module = "a"
        [operators.b]
        module = "b"
        """,
    )
    assert locations(problems_of(path)) == [f"{path}: supervisor.restart"]


# -- supervisor defaults -----------------------------------------------------------------------


def test_supervisor_defaults_inherited_and_overridden(tmp_path: Path) -> None:
    path = write(
        tmp_path / "eevee.toml",
        """
        [supervisor]
        ping_interval = 7
        restart = "on-failure"
        backoff_max = 90
        shutdown_timeout = 3
        [operators.inherits]
        module = "a"
        [operators.overrides]
        module = "b"
        ping_interval = 1
        restart = "never"
        """,
    )
    cfg = load_config(path)
    inherits, overrides = cfg.operators["inherits"], cfg.operators["overrides"]
    assert inherits.ping_interval == 7
    assert inherits.restart is RestartPolicy.ON_FAILURE
    assert inherits.backoff_max == 90
    assert inherits.stop_timeout == 5  # set nowhere: built-in default
    assert overrides.ping_interval == 1
    assert overrides.restart is RestartPolicy.NEVER
    assert overrides.backoff_max == 90
    assert cfg.supervisor.shutdown_timeout == 3


def test_supervisor_defaults_apply_to_models_built_in_code() -> None:
    cfg = Config(
        supervisor=SupervisorConfig(ping_interval=9),
        operators={
            "a": OperatorConfig(id="a", module="a"),
            "b": OperatorConfig(id="b", module="b", ping_interval=1),
        },
    )
    assert cfg.operators["a"].ping_interval == 9
    assert cfg.operators["b"].ping_interval == 1


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="XDG directories are a Linux convention")
def test_paths_follow_xdg_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Paths.default()
    for var in XDG_VARS:
        monkeypatch.setenv(var, str(tmp_path / "other" / var.lower()))
    second = Paths.default()
    assert second.state_dir == tmp_path / "other" / "xdg_state_home" / "eevee"
    assert second.cache_dir == tmp_path / "other" / "xdg_cache_home" / "eevee"
    assert second.data_dir == tmp_path / "other" / "xdg_data_home" / "eevee"
    assert second.config_dir == tmp_path / "other" / "xdg_config_home" / "eevee"
    assert second.log_dir.is_relative_to(tmp_path / "other")
    for field in ("state_dir", "log_dir", "cache_dir", "data_dir", "config_dir"):
        assert getattr(first, field) != getattr(second, field)
        assert getattr(first, field).is_relative_to(tmp_path / "xdg")


def test_paths_helpers_and_ensure(tmp_path: Path) -> None:
    paths = Paths.default(app="eevee-test")
    assert paths.state_dir.name == "eevee-test"
    assert paths.state_file == paths.state_dir / "supervisor.json"
    assert paths.jetstream_dir == paths.state_dir / "jetstream"
    assert paths.operator_cache_dir("irc.libera") == paths.cache_dir / "operators" / "irc.libera"
    assert paths.operator_data_dir("echo") == paths.data_dir / "operators" / "echo"
    with pytest.raises(SubjectError):
        paths.operator_data_dir("../escape")
    echo = paths.operator("echo")
    assert echo.id == "echo"
    assert echo.settings_file == paths.state_dir / "operators" / "echo" / "settings.json"
    assert echo.cache_dir == paths.operator_cache_dir("echo")
    assert echo.data_dir == paths.operator_data_dir("echo")
    with pytest.raises(SubjectError):
        paths.operator("../escape")
    assert not paths.state_dir.exists()
    assert paths.ensure() is paths
    for directory in (paths.state_dir, paths.log_dir, paths.cache_dir, paths.data_dir):
        assert directory.is_dir()
    assert stat.S_IMODE(paths.state_dir.stat().st_mode) == 0o700
    assert not paths.config_dir.exists()


def test_ensure_tightens_existing_state_dir(tmp_path: Path) -> None:
    paths = Paths.default()
    paths.state_dir.mkdir(parents=True)
    paths.state_dir.chmod(0o755)
    paths.ensure()
    assert stat.S_IMODE(paths.state_dir.stat().st_mode) == 0o700


def test_path_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path / "conf" / "eevee.toml",
        """
        [paths]
        state_dir = "../state"
        cache_dir = "~/cache"
        data_dir = "/abs/data"
        """,
    )
    cfg = load_config(path)
    paths = cfg.resolved_paths()
    assert paths.state_dir == tmp_path / "conf" / ".." / "state"
    assert paths.log_dir == paths.state_dir / "log"
    assert paths.cache_dir == tmp_path / "home" / "cache"
    assert paths.data_dir == Path("/abs/data")
    assert paths.config_dir == Paths.default().config_dir


def test_resolved_paths_without_overrides_are_defaults() -> None:
    assert Config().resolved_paths() == Paths.default()


# -- the shipped configuration -----------------------------------------------------------------


def test_shipped_config_loads() -> None:
    assert check_config(SHIPPED_CONFIG) == []
    cfg = load_config(SHIPPED_CONFIG)
    assert cfg.bus.url is None  # embedded NATS
    assert cfg.prefix == "eevee"
    assert cfg.operators["echo"].module == "operators.echo"
    assert cfg.operators["echo"].ping_interval == cfg.supervisor.ping_interval
