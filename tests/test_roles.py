"""Roles, their defaults and the subject allow-lists derived from them.

Pure functions: what the bus will be told each user may do (the attacks against a real server
are in test_permissions.py; which envelopes disagree with their subjects, in
test_provenance.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from eeveepy.bus.permissions import inbox_prefix, operator_permissions
from eeveepy.config import Config
from eeveepy.config.roles import Role, connector_network, default_role


def config(**operators: dict[str, Any]) -> Config:
    return Config.model_validate({"operators": operators})


def perms(cfg: Config, op_id: str, prefix: str = "eevee") -> tuple[set[str], set[str]]:
    op = cfg.operators[op_id]
    p = operator_permissions(
        prefix,
        op_id,
        module=op.module,
        role=op.role,
        settings=op.settings,
        publish=op.publish,
        subscribe=op.subscribe,
    )
    assert p.publish is not None
    assert p.subscribe is not None
    return set(p.publish), set(p.subscribe)


@pytest.mark.parametrize(
    ("module", "role"),
    [
        ("operators.router", Role.ROUTER),
        ("operators.logging", Role.LOGGING),
        ("operators.irc", Role.CONNECTOR),
        ("operators.xmpp", Role.CONNECTOR),
        ("operators.matrix", Role.CONNECTOR),
        ("operators.console", Role.CONNECTOR),
        ("operators.echo", Role.COMMAND),
        ("mypkg.bot", Role.COMMAND),
        (None, Role.COMMAND),
    ],
)
def test_default_roles(module: str | None, role: Role) -> None:
    assert default_role(module) is role


def test_roles_in_the_configuration() -> None:
    cfg = config(
        bot={"command": ["./bot"]},
        slack={"command": ["./slack"], "role": "connector", "settings": {"network": "work"}},
        mine={"module": "operators.echo", "role": "custom", "publish": ["x.>"]},
    )
    assert cfg.operators["bot"].effective_role is Role.COMMAND
    assert cfg.operators["slack"].effective_role is Role.CONNECTOR
    pub, sub = perms(cfg, "slack")
    assert "eevee.chat.in.slack.work.*" in pub
    assert "eevee.chat.out.slack.work" in sub
    pub, sub = perms(cfg, "mine")
    assert "eevee.x.>" in pub
    assert "eevee.command.register.mine" not in pub  # custom: nothing of command's


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"module": "operators.echo", "role": "boss"}, "role"),
        ({"module": "operators.echo", "publish": ["a..b"]}, "empty token"),
        ({"module": "operators.echo", "subscribe": ["a.>.b"]}, "'>' is only allowed"),
        ({"module": "operators.irc"}, "a connector's network is needed"),
    ],
)
def test_bad_tables_are_refused(table: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        config(irc=table)


def test_buckets_cannot_be_shared() -> None:
    with pytest.raises(ValueError, match=r"would be that of operator 'a\.b'"):
        config(**{"a.b": {"module": "operators.echo"}, "a_b": {"module": "operators.echo"}})
    with pytest.raises(ValueError, match="the supervisors' leases"):
        config(leases={"module": "operators.echo"})


def test_connector_networks() -> None:
    assert connector_network("irc.libera", "irc", {}) == "libera"
    assert connector_network("irc.libera", "irc", {"network": "x"}) == "x"
    assert connector_network("irc", "irc", {"host": "irc.example.org"}) == "irc.example.org"
    assert connector_network("xmpp", "xmpp", {"jid": "bot@example.org/res"}) == "bot@example.org"
    assert connector_network("console", "console", {}) == "local"
    assert connector_network("console.x", "console", {}) == "local"
    assert connector_network("matrix", "matrix", {"user_id": "@bot:example.org"}) == "example.org"
    assert connector_network("matrix.main", "matrix", {"user_id": "@b:x"}) == "main"
    assert connector_network("matrix", "matrix", {}) == ""


def test_each_role_gets_its_own_subjects_only() -> None:
    cfg = config(
        **{
            "irc.libera": {"module": "operators.irc", "settings": {"host": "h"}},
            "router": {"module": "operators.router"},
            "echo": {"module": "operators.echo"},
            "admin": {"module": "operators.admin"},
            "logging": {"module": "operators.logging"},
        }
    )
    for op_id in cfg.operators:  # only the supervisor controls, or reads, everything
        pub, sub = perms(cfg, op_id)
        assert not {">", "eevee.>", "eevee.operator.ctl.>"} & pub
        assert ("eevee.supervisor.ctl" in pub) == (op_id == "admin")  # its module's extra
        assert not {">", "_INBOX.>", "eevee.>"} & sub
        assert not [s for s in pub if "leases" in s or "STREAM.DELETE" in s]
        assert not [s for s in pub if "STREAM.CREATE" in s]
    irc_pub, irc_sub = perms(cfg, "irc.libera")
    assert "eevee.chat.in.irc.libera.*" in irc_pub
    assert not [s for s in irc_pub if s.startswith(("eevee.chat.out", "eevee.command"))]
    assert f"{inbox_prefix('irc.libera')}.>" in irc_sub
    assert inbox_prefix("irc.libera") == "_INBOX.irc%2Elibera"
    echo_pub, _ = perms(cfg, "echo")
    assert "eevee.command.register.echo" in echo_pub
    assert "eevee.command.register" not in echo_pub
    assert not [s for s in echo_pub if s.startswith(("eevee.chat.in", "eevee.log.*.r"))]
    assert "eevee.log.*.echo" in echo_pub
    admin_pub, _ = perms(cfg, "admin")
    assert {"eevee.supervisor.ctl", "eevee.supervisor.status"} <= admin_pub
    log_pub, log_sub = perms(cfg, "logging")
    assert "eevee.log.>" in log_sub
    assert "eevee.supervisor.ctl" not in log_pub
    router_pub, _ = perms(cfg, "router")
    assert {"eevee.command.run.*", "eevee.operator.ping.>"} <= router_pub
    assert "eevee.operator.ctl.>" not in router_pub


def test_the_chatops_rpc_operator_speaks_for_its_own_platform_only() -> None:
    cfg = config(crpc={"module": "operators.crpc"}, echo={"module": "operators.echo"})
    pub, sub = perms(cfg, "crpc")
    assert {"eevee.chat.in.crpc.>", "eevee.command.sync", "eevee.command.register.crpc"} <= pub
    assert not [s for s in pub if s.startswith("eevee.chat.in.") and ".crpc." not in s]
    assert "eevee.command.register" not in pub
    assert not [s for s in pub if s.startswith(("eevee.command.run", "eevee.command.rejected"))]
    assert {"eevee.chat.out.crpc.>", "eevee.command.register.>", "eevee.command.rejected.>"} <= sub
    echo_pub, echo_sub = perms(cfg, "echo")
    assert "eevee.chat.in.crpc.>" not in echo_pub
    assert "eevee.command.register.>" not in echo_sub


def test_an_explicit_role_drops_the_modules_extras() -> None:
    cfg = config(admin={"module": "operators.admin", "role": "command"})
    pub, _ = perms(cfg, "admin")
    assert "eevee.supervisor.ctl" not in pub
