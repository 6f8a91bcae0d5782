"""The markdown-ish text of ``chat.out`` as Matrix HTML (``formatted_body``), pure.

The other connectors accept ``**bold**``, ``*italic*`` / ``_italic_`` and `` `code` ``; on
Matrix they become ``<strong>``, ``<em>`` and ``<code>``, a fenced block ```` ``` ```` becomes
``<pre><code>``, and newlines ``<br>``. Everything else is escaped, so text can never inject
markup of its own (``<script>`` stays text).
"""

from __future__ import annotations

import html
import re

__all__ = ["markdown_to_html", "split_text"]

_FENCE_RE = re.compile(r"```(?:[\w+-]*\n)?(.*?)```", re.S)
_CODE_RE = re.compile(r"`([^`\r\n]+)`")
_BOLD_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_STAR_RE = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_UNDERSCORE_RE = re.compile(r"(?<![_\w])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![_\w])")


def _inline(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _CODE_RE.finditer(text):
        out.append(_emphasis(text[pos : m.start()]))
        out.append(f"<code>{html.escape(m.group(1), quote=False)}</code>")
        pos = m.end()
    out.append(_emphasis(text[pos:]))
    return "".join(out).replace("\n", "<br>")


def _emphasis(text: str) -> str:
    text = html.escape(text, quote=False)
    text = _BOLD_RE.sub(r"<strong>\1</strong>", text)
    text = _STAR_RE.sub(r"<em>\1</em>", text)
    return _UNDERSCORE_RE.sub(r"<em>\1</em>", text)


def markdown_to_html(text: str) -> str:
    """``text`` as Matrix HTML.

    >>> markdown_to_html("**hi** `a<b` _there_")
    '<strong>hi</strong> <code>a&lt;b</code> <em>there</em>'
    """
    out: list[str] = []
    pos = 0
    for m in _FENCE_RE.finditer(text):
        out.append(_inline(text[pos : m.start()]))
        out.append(f"<pre><code>{html.escape(m.group(1), quote=False)}</code></pre>")
        pos = m.end()
    out.append(_inline(text[pos:]))
    return "".join(out)


def split_text(text: str, max_bytes: int) -> list[str]:
    """``text`` cut into pieces of at most ``max_bytes`` UTF-8 bytes each, at line ends where
    possible and never inside a character (an event must stay under the 64 KiB limit)."""
    if len(text.encode()) <= max_bytes:
        return [text]
    pieces: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        if len((current + line).encode()) <= max_bytes:
            current += line
            continue
        if current:
            pieces.append(current)
            current = ""
        while len(line.encode()) > max_bytes:
            cut = line.encode()[:max_bytes].decode(errors="ignore")
            pieces.append(cut)
            line = line[len(cut) :]
        current = line
    if current:
        pieces.append(current)
    return [p.rstrip("\n") or p for p in pieces]
