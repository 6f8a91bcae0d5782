"""Settings of an ``irc.<network>`` operator, and which of them need a new connection."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eeveepy.connector.platform import network_name as kit_network_name
from operators.irc.safety import MAX_CHANNEL_BYTES, RFC_CHANTYPES, channel_problem, key_problem

__all__ = ["SESSION_FIELDS", "Channel", "IrcSettings", "network_name"]


class Channel(BaseModel):
    """A channel to join; a plain string ``"#foo"`` is accepted as ``{"name": "#foo"}``.

    The name must be one channel (:func:`~operators.irc.safety.channel_problem` with the RFC
    2812 prefixes ``#&+!``: not ``0``, no comma, whitespace or control character), the key one
    key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """The channel (``#chan``)."""
    key: str | None = None
    """Its key, if it has one."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _one_channel(cls, name: str) -> str:
        problem = channel_problem(name, RFC_CHANTYPES, MAX_CHANNEL_BYTES)
        if problem is not None:
            raise ValueError(f"not a valid IRC channel: {problem}")
        return name

    @field_validator("key")
    @classmethod
    def _one_key(cls, key: str | None) -> str | None:
        problem = None if key is None else key_problem(key)
        if problem is not None:
            raise ValueError(problem)
        return key


class IrcSettings(BaseModel):
    """Settings of an ``irc.<network>`` operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    """The IRC server's host name or address."""
    port: int = Field(default=6667, ge=1, le=65535)
    """Its port (6697 is the usual one for TLS)."""
    tls: bool = False
    """Connect with TLS."""
    tls_verify: bool = True
    """Verify the server's certificate; false is for testing only."""
    ca_file: str | None = Field(default=None, description="CA bundle to verify the server with.")
    nick: str = Field(default="eevee", min_length=1, pattern=r"^[^\s,:*?!@#$\x00]+$")
    """The bot's nick."""
    alt_nicks: list[str] = Field(default_factory=list)
    """Nicks to try, in order, when ``nick`` is taken (then ``nick`` with a number)."""
    username: str | None = Field(default=None, description="Ident; default: the nick.")
    realname: str = "eevee bot"
    """The real name (gecos) shown in WHOIS."""
    password: str | None = Field(default=None, description="Server password (PASS).")
    sasl_mechanism: Literal["PLAIN", "EXTERNAL"] | None = Field(
        default=None, description="Default: PLAIN when sasl_username/sasl_password are set."
    )
    sasl_username: str | None = None
    """SASL PLAIN account name."""
    sasl_password: str | None = None
    """SASL PLAIN password."""
    client_cert: str | None = Field(default=None, description="PEM client certificate (TLS).")
    client_key: str | None = Field(default=None, description="Its key, if not in client_cert.")
    channels: list[Channel] = Field(default_factory=list)
    """Channels to join: ``"#chan"`` or ``{name = "#chan", key = "..."}``."""
    network: str | None = Field(
        default=None, description="Network name on the bus; default: the id after 'irc.'."
    )
    egress_lines: int = Field(default=4, ge=0, description="Lines per egress_period; 0: no limit.")
    egress_period: float = Field(default=2.0, gt=0)
    """Seconds over which ``egress_lines`` lines may be sent (flood control)."""
    egress_burst: int = Field(default=5, ge=1)
    """Lines that may be sent at once before flood control paces them."""
    reconnect_min: float = Field(default=1.0, gt=0)
    """Seconds before the first reconnection; doubled on each failure."""
    reconnect_max: float = Field(default=60.0, gt=0)
    """Longest wait between reconnections."""
    reclaim_nick_interval: float = Field(default=30.0, gt=0)
    """Seconds between attempts to take ``nick`` back while using another."""
    command_prefixes: list[str] = Field(
        default_factory=lambda: ["!"], description="Informational; the router decides."
    )
    ping_interval: float = Field(
        default=120.0, gt=0, description="Seconds of silence before the connector PINGs."
    )
    ping_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for any data after that PING."
    )
    connect_timeout: float = Field(
        default=15.0, gt=0, description="Seconds for TCP+TLS connect, and x4 for registration."
    )

    @model_validator(mode="after")
    def _check(self) -> IrcSettings:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        if self.sasl_mechanism == "EXTERNAL" and not self.client_cert:
            raise ValueError("sasl_mechanism EXTERNAL needs client_cert (and tls)")
        if self.sasl_mechanism == "PLAIN" and not (self.sasl_username and self.sasl_password):
            raise ValueError("sasl_mechanism PLAIN needs sasl_username and sasl_password")
        if self.client_cert and not self.tls:
            raise ValueError("client_cert needs tls = true")
        return self

    @property
    def sasl(self) -> Literal["PLAIN", "EXTERNAL"] | None:
        """The SASL mechanism to use, if any."""
        if self.sasl_mechanism is not None:
            return self.sasl_mechanism
        if self.sasl_username and self.sasl_password:
            return "PLAIN"
        return None


SESSION_FIELDS: Final = frozenset(
    IrcSettings.model_fields.keys()
    - {
        "channels",
        "egress_lines",
        "egress_period",
        "egress_burst",
        "reconnect_min",
        "reconnect_max",
        "reclaim_nick_interval",
        "command_prefixes",
        "network",
    }
)
"""Settings whose change needs a new connection; the others are applied live."""


def network_name(settings: IrcSettings, operator_id: str) -> str:
    """The network name on the bus: the setting, else the id after ``irc.``, else the host."""
    return kit_network_name(settings.network, operator_id, "irc", settings.host)
