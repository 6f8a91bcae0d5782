"""Settings of a ``matrix.<account>`` operator, and which of them need a new session.

Secrets (a password or an access token) are :class:`~pydantic.SecretStr`, shown as ``**********``
in every log and error, or are read from a file (``password_file``, ``access_token_file``) at
each login so that a rotated secret is picked up by the next session.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from eeveepy.connector.platform import network_name as kit_network_name

__all__ = ["SESSION_FIELDS", "MatrixSettings", "network_name", "read_secret"]

USER_ID_RE: Final = re.compile(r"^@[^:\s]+:[^\s]+$")
ROOM_RE: Final = re.compile(r"^[!#][^\s]+$")
"""A room id (``!opaque``, room version 12 ids have no server part) or an alias (``#a:server``)."""
ALLOW_RE: Final = re.compile(r"^(@[^:\s]+:[^\s]+|[^@\s:!#][^\s]*)$")
"""An allow-list entry: a user id, or a server name (``example.org``, ``localhost:8448``)."""


def read_secret(path: str) -> str:
    """The secret in the file ``path``, without surrounding whitespace.

    Raises ``ValueError`` saying what to fix when it cannot be read or is empty.
    """
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


class MatrixSettings(BaseModel):
    """Settings of a ``matrix.<account>`` operator (one Matrix account)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    homeserver: str = Field(description="Client-server API base URL: https://matrix.example.org")
    user_id: str = Field(description="The bot's Matrix id: @eevee:example.org")
    password: SecretStr | None = None
    """The account's password (or give ``password_file`` or an access token)."""
    password_file: str | None = Field(default=None, description="A file holding the password.")
    access_token: SecretStr | None = Field(
        default=None, description="Use this token instead of logging in (needs device_id)."
    )
    access_token_file: str | None = Field(default=None, description="A file holding the token.")
    device_id: str | None = Field(
        default=None, description="Device to log in as; default: the one stored, else a new one."
    )
    device_name: str = "eevee"
    """The name of the bot's device, shown to other users' clients."""
    rooms: list[str] = Field(default_factory=list, description="Room ids or aliases to join.")
    invite_allow: list[str] = Field(
        default_factory=list,
        description="Invites from these user ids or servers are accepted; others are refused.",
    )
    encryption: bool = Field(default=True, description="Join and answer in encrypted rooms.")
    network: str | None = Field(
        default=None, description="Network name on the bus; default: the id after 'matrix.'."
    )
    egress_messages: int = Field(
        default=10, ge=0, description="Messages per egress_period; 0: no limit."
    )
    egress_period: float = Field(default=1.0, gt=0)
    """Seconds over which ``egress_messages`` messages may be sent (flood control)."""
    egress_burst: int = Field(default=10, ge=1)
    """Messages that may be sent at once before flood control paces them."""
    reconnect_min: float = Field(default=1.0, gt=0)
    """Seconds before the first reconnection; doubled on each failure."""
    reconnect_max: float = Field(default=60.0, gt=0)
    """Longest wait between reconnections."""
    sync_timeout: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Seconds the homeserver may hold a sync open (long poll).",
    )
    request_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds for any other request, and for a sync on top of"
        " sync_timeout: a homeserver that stopped answering is noticed after that.",
    )
    max_command_age: float = Field(
        default=300.0,
        gt=0,
        description="Messages older than this many seconds when received (sent while the bot"
        " was away for long) are not published.",
    )
    timeline_limit: int = Field(
        default=50, ge=1, le=1000, description="Events per room per sync before a gap is fetched."
    )
    max_backfill: int = Field(
        default=1000,
        ge=0,
        description="At most this many events fetched to fill one gap in a room's timeline.",
    )
    max_retry_after: float = Field(
        default=60.0, gt=0, description="Longest wait honoured for a 429's retry_after_ms."
    )

    @field_validator("homeserver")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. https://matrix.example.org")
        return url.rstrip("/")

    @field_validator("user_id")
    @classmethod
    def _user(cls, user: str) -> str:
        if not USER_ID_RE.match(user):
            raise ValueError("must be a full Matrix user id, e.g. @eevee:example.org")
        return user

    @field_validator("rooms")
    @classmethod
    def _rooms(cls, rooms: list[str]) -> list[str]:
        for room in rooms:
            if not ROOM_RE.match(room):
                raise ValueError(f"{room!r} is not a room id (!...) or alias (#name:server)")
        return rooms

    @field_validator("invite_allow")
    @classmethod
    def _allow(cls, allow: list[str]) -> list[str]:
        for entry in allow:
            if not ALLOW_RE.match(entry):
                raise ValueError(f"{entry!r} is neither a user id (@u:server) nor a server name")
        return allow

    @model_validator(mode="after")
    def _check(self) -> MatrixSettings:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.access_token is not None and self.access_token_file is not None:
            raise ValueError("give access_token or access_token_file, not both")
        token = self.access_token is not None or self.access_token_file is not None
        if not token and self.password is None and self.password_file is None:
            raise ValueError(
                "give a password (password or password_file) or an access token"
                " (access_token or access_token_file, with device_id)"
            )
        if token and not self.device_id:
            raise ValueError("an access token needs the device_id it was issued for")
        for path in (self.password_file, self.access_token_file):
            if path is not None:
                read_secret(path)  # a clear error now rather than at the first login
        return self

    def login_password(self) -> str | None:
        """The password, read from ``password_file`` when that is how it is given."""
        if self.password_file is not None:
            return read_secret(self.password_file)
        return None if self.password is None else self.password.get_secret_value()

    def given_token(self) -> str | None:
        """The access token the settings give, if any."""
        if self.access_token_file is not None:
            return read_secret(self.access_token_file)
        return None if self.access_token is None else self.access_token.get_secret_value()

    def allowed_inviter(self, sender: str) -> bool:
        """Whether an invite from ``sender`` (a user id) is accepted."""
        server = sender.partition(":")[2]
        return any(entry in (sender, server) for entry in self.invite_allow)


SESSION_FIELDS: Final = frozenset(
    {
        "homeserver",
        "user_id",
        "password",
        "password_file",
        "access_token",
        "access_token_file",
        "device_id",
        "device_name",
        "encryption",
        "sync_timeout",
        "request_timeout",
        "timeline_limit",
    }
)
"""Settings whose change needs a new session; the others apply live."""


def network_name(settings: MatrixSettings, operator_id: str) -> str:
    """The network name on the bus: the setting, else the id after ``matrix.``, else the
    user id's server name."""
    server = settings.user_id.partition(":")[2]
    return kit_network_name(settings.network, operator_id, "matrix", server)
