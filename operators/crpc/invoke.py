"""A method call's request body and what the user sees of the answer (pure: no I/O).

The body is ``{"user", "room_id", "method", "params"}`` (JSON, as the reference client sends
it). The answer is shown as real peers expect (PROTOCOL.md, "Display"):

- ``result``: as is; nothing when it is blank;
- ``result: null``: `` `COMMAND` returned no output ``;
- ``error.message``: as is;
- rich answers (``title``, ``title_link``, ``image_url``, ``color``): as text every connector
  shows, the title with its link on the first line, the result, then the image's URL;
- a transport error or timeout, an answer that is not JSON, ``null``, or without ``result``:
  the listing's ``error_response`` addressed to the user if it has one, else ``Error: ``
  followed by the first 300 characters of what went wrong.
"""

from __future__ import annotations

import json
from typing import Any, Final

from .transport import Answer

__all__ = ["ERROR_CHARS", "render", "request_body"]

ERROR_CHARS: Final = 300
"""How much of an error is shown in chat."""


def request_body(user: str, room_id: str, method: str, params: dict[str, str]) -> bytes:
    """The JSON body of a method call (the bytes that are signed and sent)."""
    data = {"user": user, "room_id": room_id, "method": method, "params": params}
    return json.dumps(data, ensure_ascii=False).encode()


def _rpc_error(what: str, user: str, error_response: str | None) -> str:
    if error_response:
        return f"{user}: {error_response}"
    return "Error: " + what[:ERROR_CHARS]


def _text(value: Any) -> str | None:
    """A field as text: strings as they are, other JSON as JSON, null as None."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _rich(parsed: dict[str, Any]) -> str | None:
    lines: list[str] = []
    title, link = _text(parsed.get("title")), _text(parsed.get("title_link"))
    if title:
        lines.append(f"{title} <{link}>" if link else title)
    result = _text(parsed.get("result"))
    if result and result.strip():
        lines.append(result)
    image = _text(parsed.get("image_url"))
    if image:
        lines.append(image)
    return "\n".join(lines) or None


def render(answer: Answer, *, command: str, user: str, error_response: str | None) -> str | None:
    """What to say in chat for ``answer`` to ``command`` (as the user typed it) by ``user``;
    None: say nothing (a blank result)."""
    if answer.error is not None:
        return _rpc_error(answer.error, user, error_response)
    text = answer.body.decode("utf-8", "replace")
    try:
        parsed = json.loads(answer.body)
    except (ValueError, RecursionError):
        return _rpc_error(text or f"HTTP {answer.status} with an empty body", user, error_response)
    if parsed is None:
        return _rpc_error("Invalid output, null", user, error_response)
    if not isinstance(parsed, dict):
        return _rpc_error(text, user, error_response)
    error = parsed.get("error")
    if isinstance(error, dict) and error.get("message"):
        return _text(error["message"])
    if parsed.get("title") or parsed.get("image_url"):
        return _rich(parsed)
    if "result" not in parsed:
        what = f"Invalid response, missing result (HTTP code: {answer.status})"
        return _rpc_error(what, user, error_response)
    result = _text(parsed["result"])
    if result is None:
        return f"`{command}` returned no output"
    return result if result.strip() else None
