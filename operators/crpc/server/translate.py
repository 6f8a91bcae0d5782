"""ChatOps RPC ↔ eevee commands, both ways (pure: no I/O).

- The listing: each command the router accepted becomes a method whose regex is the command's
  name (or an alias) and, optionally, its argument text as the capture ``args``:
  ``(?:deploy|ship)(?: (?<args>.*))?``. Clients match chat text against it and send ``args``;
  the router then parses the arguments with the command's own pattern, as in chat.
- A call: ``args`` and the other params (as ``--name value`` flags, the ChatOps RPC way the
  router reads too) make the command line the router is given.
- The answer: the replies to that line, told apart from the router's own refusals (unknown
  command, not allowed, usage, failed...) by who sent them and their documented wording, become
  a JSON-RPC ``result`` or an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from eeveepy.errors import CallError
from eeveepy.protocol.models import CommandRegistration

__all__ = [
    "ARGS",
    "BAD_PARAMS",
    "METHOD_NOT_FOUND",
    "Answer",
    "Call",
    "command_line",
    "listing",
    "method",
    "outcome",
    "parse_call",
]

ARGS: Final = "args"
"""The param holding a command's argument text."""

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
BAD_PARAMS: Final = -32602
NOT_AUTHORIZED: Final = -32800
SERVER_ERROR: Final = -32000

MAX_NAME: Final = 200
"""Longest user, room or method name accepted."""

_PARAM: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_GROUP: Final = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")


def method(reg: CommandRegistration) -> dict[str, Any]:
    """The listing entry of a command: regex (Ruby syntax), params, path and help."""
    words = "|".join(re.escape(w) for w in [reg.name, *reg.aliases])
    params = [ARGS]
    for group in _GROUP.findall(reg.pattern or ""):
        if group not in params:
            params.append(group)
    help_text = reg.usage or reg.name
    if reg.help:
        help_text += f" - {reg.help}"
    return {
        "regex": f"(?:{words})(?: (?<{ARGS}>.*))?",
        "params": params,
        "path": reg.name,
        "help": help_text,
    }


def listing(
    regs: Iterable[CommandRegistration],
    *,
    namespace: str,
    help_text: str | None,
    error_response: str | None,
) -> dict[str, Any]:
    """The ``GET /_chatops`` body for the commands ``regs``."""
    return {
        "namespace": namespace,
        "help": help_text,
        "error_response": error_response,
        "methods": {reg.name: method(reg) for reg in regs},
        "version": "3",
    }


@dataclass(frozen=True, slots=True)
class Call:
    """What a call's body says: who, where, and the params."""

    user: str
    room: str
    name: str
    """How the user is shown: the ``mention_slug`` if given, else ``user``."""
    params: Mapping[str, object]


def parse_call(body: bytes) -> Call:
    """The :class:`Call` in a POST body (unknown fields are dropped).

    Raises :class:`CallError` (400) for a body that is not a JSON object, no ``user``, or a
    ``room_id`` or ``params`` of the wrong type. Without ``room_id`` the room is the user."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise CallError("the body is not JSON", PARSE_ERROR, 400) from None
    if not isinstance(data, dict):
        raise CallError("the body must be a JSON object", INVALID_REQUEST, 400)
    user = data.get("user")
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_NAME:
        raise CallError("A username must be supplied as 'user'", BAD_PARAMS, 400)
    user = user.strip()
    room = data.get("room_id") or user
    if not isinstance(room, str) or len(room) > MAX_NAME:
        raise CallError(f"'room_id' must be a string of at most {MAX_NAME}", BAD_PARAMS, 400)
    slug = data.get("mention_slug")
    name = slug if isinstance(slug, str) and slug.strip() and len(slug) <= MAX_NAME else user
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise CallError("'params' must be an object", BAD_PARAMS, 400)
    return Call(user, room, name.strip(), params)


def _value(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else None
    if isinstance(value, str | int | float):
        return str(value)
    raise CallError(f"param '{name}' must be a string, a number or a boolean", BAD_PARAMS, 400)


def command_line(name: str, params: Mapping[str, object]) -> str:
    """The line the router is given for a call of ``name`` with ``params``: the command, the
    ``args`` text, then each other param as ``--name value`` (``--name`` alone for ``"true"``).

    Raises :class:`CallError` (400, -32602) for a param name or value that cannot be a flag.
    """
    parts = [name]
    args = _value(ARGS, params.get(ARGS))
    if args and args.strip():
        parts.append(args.strip())
    for key, raw in params.items():
        if key == ARGS:
            continue
        if not _PARAM.fullmatch(key):
            raise CallError(
                f"param name {key[:70]!r} must be letters, digits, '-' or '_'", BAD_PARAMS, 400
            )
        value = _value(key, raw)
        if value is None:
            continue
        flat = " ".join(value.split())
        parts.append(f"--{key}" if flat == "true" else f"--{key} {flat}")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for a call: reply texts, and whether the router said them itself."""

    texts: tuple[str, ...]
    from_router: bool


def outcome(name: str, answer: Answer | None) -> str | None:
    """The JSON-RPC ``result`` for ``answer`` (None: the command answered nothing in time).

    Raises :class:`CallError` for the router's refusals: unknown command (404, -32601), not
    allowed (403, -32800), usage and failures (400, -32602, the router's words), unavailable
    or timed out (503, -32000)."""
    if answer is None:
        return None
    text = "\n".join(answer.texts)
    if not answer.from_router:
        return text
    if text.startswith("unknown command"):
        raise CallError("Method not found", METHOD_NOT_FOUND, 404)
    if text.startswith("you are not allowed"):
        raise CallError(text, NOT_AUTHORIZED, 403)
    if text.startswith((f"`{name}` is unavailable", f"`{name}` timed out")):
        raise CallError(text, SERVER_ERROR, 503)
    raise CallError(text, BAD_PARAMS, 400)
