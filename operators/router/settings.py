"""Settings of the router operator (validated by the runtime at start and on reload)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eeveepy.protocol.models import RateLimit

__all__ = ["CommandRules", "RouterSettings"]


class CommandRules(BaseModel):
    """Who may run one command (see :class:`~operators.router.permissions.Rule`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: list[str] = Field(default_factory=list)
    """Who may run it: identity patterns, ``group:<name>``, ``room:<...>``, ``network:<...>``."""
    deny: list[str] = Field(default_factory=list)
    """Who may not, even if allowed (same entries as ``allow``); deny wins."""


class RouterSettings(BaseModel):
    """Settings of the router operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefixes: list[str] = Field(default_factory=lambda: ["!"])
    """Command prefixes (``!echo``)."""
    prefix_overrides: dict[str, list[str]] = Field(default_factory=dict)
    """Prefixes per ``platform``, ``platform/network`` or ``platform/network/room``; the most
    specific wins. An empty list: only addressed and private messages are commands there."""
    names: list[str] = Field(default_factory=lambda: ["eevee"])
    """Names the bot answers to: ``eevee: cmd``, ``eevee, cmd``, ``@eevee cmd``."""
    unknown_reply: bool = True
    """Answer an unknown command with a hint."""
    admins: list[str] = Field(default_factory=list)
    """Identity patterns of the users allowed everything."""
    groups: dict[str, list[str]] = Field(default_factory=dict)
    """Group name -> entries (identity patterns, group:, room:, network:)."""
    rules: dict[str, CommandRules] = Field(default_factory=dict)
    """Command name (or ``*`` for every command) -> allow/deny entries."""
    ignore: list[str] = Field(default_factory=list)
    """Identity patterns whose messages are dropped silently."""
    owners: dict[str, list[str]] = Field(default_factory=dict)
    """Command name -> operator ids (globs) that may register it. A listed command is refused
    from anyone else; a listed operator may take a command over from one no longer running.
    Unlisted commands belong to the first operator that registered them."""
    user_rate: RateLimit | None = None
    """Commands per user (all commands together)."""
    room_rate: RateLimit | None = None
    """Commands per room."""
    global_rate: RateLimit | None = None
    """Commands in total."""
    rate_mode: Literal["drop", "queue"] = "drop"
    """Over a limit: drop, or delay up to ``queue_max_delay`` seconds (then drop)."""
    queue_max_delay: float = Field(default=5.0, ge=0)
    """Seconds a command may wait in the queue (``rate_mode = "queue"``) before it is dropped."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds a command operator gets to answer."""
    max_in_flight: int = Field(default=256, ge=1)
    """Commands running at once; more wait their turn."""
    retry_for: float = Field(default=3.0, ge=0)
    """Seconds to keep asking a command whose operator is not running (it may be restarting)
    before answering that it is unavailable."""
    max_age: float = Field(default=120.0, ge=0)
    """Seconds after which a command that waited (the router was down, the bus was away) is
    not run any more: the user is told instead. 0: no limit."""

    @field_validator("prefix_overrides")
    @classmethod
    def _override_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in value:
            if not key or key.count("/") > 2 or any(not part for part in key.split("/")[:2]):
                raise ValueError(
                    f"key {key!r}: use 'platform', 'platform/network' or 'platform/network/room'"
                )
        return value

    @field_validator("names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be empty")
        return value
