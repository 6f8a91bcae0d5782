"""Settings of an ``xmpp.<account>`` operator, and which of them need a new connection."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eeveepy.connector.platform import network_name as kit_network_name
from eeveepy.errors import AuthenticationError
from operators.xmpp.text import jid_problem, resource_problem

__all__ = ["SESSION_FIELDS", "MucRoom", "XmppSettings", "network_name"]

TlsMode = Literal["starttls", "direct", "plain"]


class MucRoom(BaseModel):
    """A multi-user chat room to join; a plain string ``"room@conference.example.org"`` is
    accepted as ``{"jid": ...}``. ``nick`` overrides the account's nick there; ``password``
    is the room's password, if it has one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jid: str
    """The room's address, ``room@conference.example.org``."""
    nick: str | None = Field(default=None, min_length=1, max_length=1023)
    """The bot's nick in this room; default: the account's ``nick``."""
    password: SecretStr | None = None
    """The room's password, if it has one."""

    @property
    def key(self) -> str | None:
        """The room's password, in clear (for the join)."""
        return self.password.get_secret_value() if self.password is not None else None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"jid": data} if isinstance(data, str) else data

    @field_validator("nick")
    @classmethod
    def _room_nick(cls, nick: str | None) -> str | None:
        return None if nick is None else _resource("nick", nick)

    @field_validator("jid")
    @classmethod
    def _room_jid(cls, jid: str) -> str:
        problem = jid_problem(jid, bare=True)
        if problem is not None:
            raise ValueError(f"not a room JID (room@conference.example.org): {problem}")
        return jid


class XmppSettings(BaseModel):
    """Settings of an ``xmpp.<account>`` operator: one XMPP account, its rooms, its limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jid: str = Field(description="The bot's account, user@example.org (a resource is ignored).")
    password: SecretStr | None = Field(default=None, description="The account's password.")
    password_file: Path | None = Field(
        default=None, description="A file holding the password (first line), instead of password."
    )
    host: str | None = Field(default=None, description="Server to connect to; default: DNS SRV.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default 5222 / 5223.")
    tls: TlsMode = Field(
        default="starttls",
        description="starttls (required), direct (TLS from the first byte), plain (no TLS).",
    )
    allow_plaintext: bool = Field(
        default=False,
        description="Allow tls = plain to a host that is not loopback (credentials in clear).",
    )
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")
    tls_verify: bool = True
    """Verify the server's certificate; false is for testing only."""
    resource: str = Field(default="eevee", min_length=1, max_length=1023)
    """The resource the bot's session binds."""
    nick: str = Field(default="eevee", min_length=1, max_length=1023)
    """The bot's nick in rooms."""
    alt_nicks: list[str] = Field(
        default_factory=list, description="Nicks to try when a room has ours taken."
    )
    rooms: list[MucRoom] = Field(default_factory=list)
    """Rooms to join: ``"room@conference.example.org"`` or a table with ``jid`` (and ``nick``,
    ``password``)."""
    invite_from: list[str] = Field(
        default_factory=list,
        description="JIDs or domains whose room invitations are accepted (joined).",
    )
    network: str | None = Field(
        default=None, description="Network name on the bus; default: the id after 'xmpp.'."
    )
    egress_messages: int = Field(default=5, ge=0, description="Messages per period; 0: no limit.")
    egress_period: float = Field(default=1.0, gt=0)
    """Seconds over which ``egress_messages`` messages may be sent (flood control)."""
    egress_burst: int = Field(default=10, ge=1)
    """Messages that may be sent at once before flood control paces them."""
    reconnect_min: float = Field(default=1.0, gt=0)
    """Seconds before the first reconnection; doubled on each failure."""
    reconnect_max: float = Field(default=60.0, gt=0)
    """Longest wait between reconnections."""
    connect_timeout: float = Field(default=20.0, gt=0, description="Seconds to log in.")
    ping_interval: float = Field(default=60.0, gt=0, description="Seconds between XEP-0199 pings.")
    ping_timeout: float = Field(default=20.0, gt=0, description="Seconds to wait for a pong.")
    max_message_bytes: int = Field(
        default=60000,
        ge=64,
        le=10_000_000,
        description=(
            "A longer message (in UTF-8 bytes as sent, XML-escaped) is split; keep it under"
            " the server's stanza limit."
        ),
    )
    styling: bool = Field(default=True, description="Send markdown as XEP-0393 message styling.")
    max_delay: float = Field(
        default=300.0,
        ge=0,
        description="Delayed (offline) one-to-one messages older than this are not taken.",
    )

    @field_validator("jid")
    @classmethod
    def _account(cls, jid: str) -> str:
        problem = jid_problem(jid.partition("/")[0], bare=True)
        if problem is not None:
            raise ValueError(f"not an account JID (user@example.org): {problem}")
        return jid.partition("/")[0]

    @field_validator("resource", "nick")
    @classmethod
    def _names(cls, name: str, info: ValidationInfo) -> str:
        return _resource(str(info.field_name), name)

    @field_validator("alt_nicks")
    @classmethod
    def _alt_nicks(cls, nicks: list[str]) -> list[str]:
        return [_resource("alt_nicks", nick) for nick in nicks]

    @field_validator("invite_from")
    @classmethod
    def _inviters(cls, items: list[str]) -> list[str]:
        for item in items:
            problem = jid_problem(item, bare=False)
            if problem is not None:
                raise ValueError(f"invite_from {item!r}: {problem}")
        return items

    @model_validator(mode="after")
    def _check(self) -> XmppSettings:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("give exactly one of password and password_file")
        if self.password_file is not None and not os.access(self.password_file, os.R_OK):
            raise ValueError(f"password_file {self.password_file} cannot be read")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        if self.tls == "plain" and not self.allow_plaintext and not _loopback(self.server):
            raise ValueError(
                f"tls = plain would send the password in clear to {self.server}: use starttls or"
                " direct, or set allow_plaintext = true"
            )
        return self

    @property
    def server(self) -> str:
        """The host connected to: ``host``, else the account's domain."""
        return self.host or self.jid.partition("@")[2]

    @property
    def server_port(self) -> int:
        """The port connected to."""
        return self.port or (5223 if self.tls == "direct" else 5222)

    def secret(self) -> str:
        """The password (read from ``password_file`` when that is how it is given)."""
        if self.password is not None:
            return self.password.get_secret_value()
        assert self.password_file is not None
        try:
            lines = self.password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthenticationError(
                f"cannot read password_file {self.password_file}: {exc}"
            ) from None
        return lines[0] if lines else ""


def _resource(field: str, name: str) -> str:
    """``name`` if it can be a resource (a nick is the resource of an occupant JID)."""
    problem = resource_problem(name)
    if problem is not None:
        raise ValueError(f"{field} {name!r}: {problem}")
    return name


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SESSION_FIELDS: Final = frozenset(
    XmppSettings.model_fields.keys()
    - {
        "rooms",
        "invite_from",
        "egress_messages",
        "egress_period",
        "egress_burst",
        "reconnect_min",
        "reconnect_max",
        "ping_interval",
        "ping_timeout",
        "max_message_bytes",
        "styling",
        "max_delay",
        "network",
        "alt_nicks",
    }
)
"""Settings whose change needs a new connection; the others are applied live."""


def network_name(settings: XmppSettings, operator_id: str) -> str:
    """The network name on the bus: the setting, else the id after ``xmpp.``, else the JID."""
    return kit_network_name(settings.network, operator_id, "xmpp", settings.jid)
