"""A ChatOps RPC server's listing and the methods it offers (pure: no I/O).

``GET <listing URL>`` answers ``{"namespace", "help", "error_response", "methods": {NAME:
{"regex", "params", "path", "help"}}, "version"}``. :func:`parse_listing` reads it the way
real servers send it (``version`` as the string ``"3"``, the number ``3`` or missing; ``help``
and ``error_response`` may be null; unknown keys ignored) and :class:`Namespace` holds what the
client needs: each method's compiled pattern and URL, the methods left out and why, the help.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eeveepy.errors import ListingError, RegexError
from eeveepy.protocol.codec import describe_validation_error

from .rubyre import compile_method

__all__ = ["MAX_LISTING", "Listing", "Method", "Namespace", "parse_listing"]

MAX_LISTING: Final = 1 << 20
"""Largest listing (bytes) read from a server."""


class Method(BaseModel):
    """One listed method."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    regex: str = Field(max_length=10_000)
    params: list[str] = Field(default_factory=list)
    path: str | None = None
    help: str | None = None


class Listing(BaseModel):
    """A server's listing, as stored (``rpc debug`` shows it)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    namespace: str = ""
    help: str | None = None
    error_response: str | None = None
    methods: dict[str, Method] = Field(default_factory=dict)
    version: int = 3
    """The protocol version: ``"3"``, ``3`` and a missing version all mean 3."""

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if value is None:
            return 3
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("namespace", mode="before")
    @classmethod
    def _namespace(cls, value: Any) -> Any:
        return "" if value is None else value


def parse_listing(raw: bytes) -> Listing:
    """The listing in a server's answer; :class:`ListingError` says what is wrong with it."""
    if len(raw) > MAX_LISTING:
        raise ListingError(f"the listing is larger than {MAX_LISTING} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ListingError(f"the listing is not JSON: {_short(raw)}") from None
    if not isinstance(data, dict):
        raise ListingError(f"the listing is not a JSON object: {_short(raw)}")
    if not isinstance(data.get("methods"), dict):
        raise ListingError("the listing has no `methods` object")
    try:
        return Listing.model_validate(data)
    except ValidationError as exc:
        raise ListingError(f"the listing: {describe_validation_error(exc)}") from None


def _short(raw: bytes, n: int = 150) -> str:
    """The start of a body, on one line (an HTML error page gets noisy in chat quickly)."""
    return raw[:n].decode("utf-8", "replace").replace("\n", "\\n")


@dataclass(frozen=True)
class Compiled:
    """A method ready to match: its name, pattern, URL and help."""

    name: str
    pattern: re.Pattern[str]
    url: str
    help: str


@dataclass(frozen=True)
class Namespace:
    """The methods of one endpoint under its prefix, compiled from its listing."""

    url: str
    prefix: str
    listing: Listing
    methods: tuple[Compiled, ...]
    skipped: tuple[str, ...]
    """Methods left out, each with the reason (a regex Python cannot use)."""

    @classmethod
    def build(cls, url: str, prefix: str, listing: Listing) -> Namespace:
        """Compile ``listing``'s methods; a method whose regex cannot be used is skipped."""
        methods: list[Compiled] = []
        skipped: list[str] = []
        for name, method in listing.methods.items():
            try:
                pattern = compile_method(method.regex)
            except RegexError as exc:
                skipped.append(f"{name}: {exc}")
                continue
            # The method URL is a plain join, as the reference client does (and signs).
            target = f"{url}/{method.path}" if method.path else url
            methods.append(Compiled(name, pattern, target, method.help or ""))
        return cls(url, prefix, listing, tuple(methods), tuple(skipped))

    def match(self, text: str, args: dict[str, str]) -> tuple[Compiled, dict[str, str]] | None:
        """The first method whose pattern matches ``text`` (the command without its prefix
        and ``--long-args``) entirely, and its params: the named groups that took part,
        overridden by ``args``. None when no method matches."""
        for method in self.methods:
            found = method.pattern.fullmatch(text)
            if found is not None:
                params = {k: v for k, v in found.groupdict().items() if v is not None}
                return method, params | args
        return None

    def help_text(self, lead: str) -> str:
        """The namespace's help and each method's, written as a user types them."""
        head = f"{lead}{self.prefix}"
        lines = [f"{head}: {self.listing.help}" if self.listing.help else f"{head}:"]
        for method in self.methods:
            lines.append(f"{head} {method.help or method.pattern.pattern}")
        if not self.methods:
            lines.append("(no methods)")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line for the router's help: the namespace help and the methods' names."""
        names = ", ".join(m.name for m in self.methods) or "none yet"
        about = self.listing.help or self.listing.namespace or self.url
        return f"{about} (methods: {names}; the prefix alone lists them)"
