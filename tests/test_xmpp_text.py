"""XMPP text with no I/O: JIDs, XML-safe text, message styling, mentions, splitting."""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, fromstring, tostring

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slixmpp.xmlstream.tostring import escape

from eeveepy.errors import ConnectorError, EeveeError
from operators.xmpp.text import (
    fold_jid,
    jid_problem,
    mentions,
    resource_problem,
    split_body,
    strip_markdown,
    to_styling,
    xml_safe,
)

# What XML 1.0 cannot carry (the Char production's complement below U+10000).
UNSENDABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
MARKERS = "*_~`"
ASCII_SPACE = set(" \t\n\r\x0b\x0c")

# Any character at all (lone surrogates too), with plenty of markup, NUL-b, spaces, line
# breaks and multi-byte characters.
any_text = st.lists(
    st.one_of(
        st.sampled_from(["*", "**", "_", "~~", "`", " ", "\n", "\r", "\x00b", "é", "☃", "😀"]),
        st.sampled_from(["&", "<", ">", '"', "'", "&amp;", "&quot"]),
        st.sampled_from(["\x01", "\x1b", "\ud800", "\udfff", "\ufffe", "\uffff"]),
        st.characters(),  # (no surrogates: they come from the list above)
    ),
    max_size=200,
).map("".join)
# Text split_body accepts (xml_safe: no surrogates), with lines and words of varied length.
safe_text = any_text.map(xml_safe)


# -- JIDs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "jid", ["bot@example.org", "a@b", "a@1.2.3.4", "a@[::1]", "ß@xn--bcher-kva.example"]
)
def test_bare_jids_accepted(jid: str) -> None:
    assert jid_problem(jid, bare=True) is None
    assert jid_problem(jid, bare=False) is None


@pytest.mark.parametrize("jid", ["example.org", "bot@example.org/res", "room@conference.x/nick"])
def test_domain_and_full_jids_only_when_not_bare(jid: str) -> None:
    assert jid_problem(jid, bare=False) is None
    problem = jid_problem(jid, bare=True)
    assert problem is not None
    assert "local@domain" in problem


@pytest.mark.parametrize(
    ("jid", "words"),
    [
        ("", "empty"),
        (" a@b", "spaces"),
        ("a@b ", "spaces"),
        ("@b", "nodepart"),
        ("a@", "domain"),
        ("a@b/", "resource"),
        ("a b@c", "localpart"),
        ("a@b c", "domain"),
        ("a@b..c", "domain"),
        ("\x00@b", "localpart"),
        ("a@b/\x00", "resource"),
        ("a@" + "x" * 2000, "domain"),
    ],
)
def test_bad_jids_say_what_is_wrong(jid: str, words: str) -> None:
    for bare in (True, False):
        problem = jid_problem(jid, bare=bare)
        assert problem is not None
        assert words in problem


@given(st.text(max_size=60))
@settings(max_examples=100, deadline=None)
def test_jid_problem_and_fold_never_raise(jid: str) -> None:
    problem = jid_problem(jid, bare=True)
    assert problem is None or (isinstance(problem, str) and problem)
    if problem is None:  # a bare JID is also fine where any JID is
        assert jid_problem(jid, bare=False) is None
    folded = fold_jid(jid)
    assert fold_jid(folded) == folded  # folding is stable


@pytest.mark.parametrize("name", ["eevee", "Eevee [bot] ☃", "a/b", "x" * 1023, "a@b"])
def test_resources_accepted(name: str) -> None:
    assert resource_problem(name) is None


@pytest.mark.parametrize("name", ["", " eevee", "eevee ", "bot\x00", "\x07", "x" * 1024])
def test_bad_resources(name: str) -> None:
    assert resource_problem(name)


def test_fold_jid_folds_local_part_and_domain_but_not_the_resource() -> None:
    assert fold_jid("Bot@Example.ORG") == "bot@example.org"
    assert fold_jid("Room@Conference.Example.org/Alice") == "room@conference.example.org/Alice"
    assert fold_jid("room@conference.example.org/alice") != fold_jid(
        "room@conference.example.org/Alice"
    )
    assert fold_jid("Straße@example.org") == fold_jid("strasse@EXAMPLE.org")
    # An invalid JID is still folded the simple way (never raises).
    assert fold_jid("A B@Example/R R") == "a b@example/R R"


# -- XML-safe text -----------------------------------------------------------------------------


def test_xml_safe_examples() -> None:
    assert xml_safe("plain ünï ☃ 😀\ttab\nline\rcr") == "plain ünï ☃ 😀\ttab\nline\rcr"
    assert xml_safe("a\x00b\x01c\x1bd\x1f") == "a␀b␁c␛d␟"
    assert xml_safe("\ud800x\udfff\ufffe\uffff") == "\ufffdx\ufffd\ufffd\ufffd"
    assert xml_safe("\x7f\u0085\U0010ffff") == "\x7f\u0085\U0010ffff"  # XML 1.0 takes these
    assert xml_safe("") == ""


@given(any_text)
@settings(max_examples=100, deadline=None)
def test_xml_safe_output_is_carried_by_xml(text: str) -> None:
    safe = xml_safe(text)
    assert len(safe) == len(text)  # one character for one
    assert not UNSENDABLE.search(safe)
    assert xml_safe(safe) == safe
    assert safe.encode("utf-8").decode("utf-8") == safe  # no surrogate left
    # A real XML parser reads it back (only CR is normalised by XML itself).
    el = Element("body")
    el.text = safe
    assert (fromstring(tostring(el)).text or "") == safe.replace("\r\n", "\n").replace("\r", "\n")


# -- styling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "styled", "plain"),
    [
        ("**hi** *there* ~~no~~ `a*b*c`", "*hi* _there_ ~no~ `a*b*c`", "hi there no a*b*c"),
        ("_already_ styling", "_already_ styling", "already styling"),
        (
            "snake_case_name and 2 * 3 * 4",
            "snake_case_name and 2 * 3 * 4",
            "snake_case_name and 2 * 3 * 4",
        ),
        ("a ** b ~~ c", "a ** b ~~ c", "a ** b ~~ c"),
        ("**bold with *italic* inside**", "*bold with _italic_ inside*", "bold with italic inside"),
        ("`unclosed **x**", "`unclosed *x*", "`unclosed x"),
        ("`**code**` **bold**", "`**code**` *bold*", "**code** bold"),
        ("**a**b", "*a*b", "ab"),
        ("", "", ""),
    ],
)
def test_styling_examples(markdown: str, styled: str, plain: str) -> None:
    assert to_styling(markdown) == styled
    assert strip_markdown(markdown) == plain


def test_fenced_code_blocks_are_left_alone() -> None:
    block = "```py\ndef f(*args, **kwargs):\n    return a**2 * b**2  # _x_ ~~y~~\n```"
    assert to_styling(f"**out**\n{block}\n*done*") == f"*out*\n{block}\n_done_"
    assert strip_markdown(f"**out**\n{block}\n*done*") == (
        "out\ndef f(*args, **kwargs):\n    return a**2 * b**2  # _x_ ~~y~~\ndone"
    )
    assert strip_markdown("```\n*a*\n```") == "*a*"
    assert strip_markdown("run ```ls *.py``` now") == "run ls *.py now"
    assert to_styling("```unclosed **b**") == "```unclosed *b*"  # no block without its end


def test_styling_keeps_nul_characters_of_the_text() -> None:
    # The bold placeholder must not be confused with the text's own characters.
    assert to_styling("a\x00bc **x**") == "a\x00bc *x*"
    assert to_styling("**\x00b** \x00\x00b") == "*\x00b* \x00\x00b"


def _without_markers(text: str) -> str:
    return "".join(c for c in text if c not in MARKERS)


@given(any_text)
@settings(max_examples=100, deadline=None)
def test_styling_only_moves_markers(text: str) -> None:
    # Everything but the markup characters stays, in order; only markers come and go.
    assert _without_markers(to_styling(text)) == _without_markers(text)
    assert _without_markers(strip_markdown(text)) == _without_markers(text)
    assert set(strip_markdown(text)) <= set(text)


@given(st.text(alphabet=st.characters(blacklist_characters=MARKERS), max_size=100))
@settings(max_examples=50, deadline=None)
def test_text_without_markup_is_left_alone(text: str) -> None:
    assert to_styling(text) == text
    assert strip_markdown(text) == text


# -- mentions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nick", "expected"),
    [
        ("eevee: hi", "eevee", True),
        ("hi eevee!", "eevee", True),
        ("HI EEVEE", "eevee", True),
        ("@eevee, look", "eevee", True),
        ("eevee's turn", "eevee", True),
        ("eeveebot is here", "eevee", False),
        ("my-eevee", "eevee", False),
        ("eevee-bot", "eevee", False),
        ("the_eevee", "eevee", False),
        ("axb", "a.b", False),  # the nick is text, not a pattern
        ("ping a.b now", "a.b", True),
        ("ping [bot] now", "[bot]", True),
        ("anything", "", False),
        ("", "eevee", False),
    ],
)
def test_mentions(text: str, nick: str, expected: bool) -> None:
    assert mentions(text, nick) is expected


@given(any_text, st.text(max_size=12))
@settings(max_examples=50, deadline=None)
def test_mentions_never_raises(text: str, nick: str) -> None:
    assert mentions(text, nick) in (True, False)
    if nick.strip() and re.fullmatch(r"\w+", nick):
        assert mentions(f"{text} {nick}", nick)


# -- splitting ---------------------------------------------------------------------------------


def _check_pieces(text: str, pieces: list[str], max_bytes: int) -> None:
    """Each piece fits; the pieces are the text, in order, less whitespace at cut points."""
    pos = 0
    for piece in pieces:
        size = len(escape(piece).encode("utf-8"))  # as sent; proves no cut inside a character
        assert 0 < size <= max_bytes
        assert piece.strip(" \t\n\r\x0b\x0c"), "a blank piece was kept"
        at = text.find(piece, pos)
        assert at >= 0, f"piece {piece!r} is not the text's at {pos}"
        assert set(text[pos:at]) <= ASCII_SPACE, f"lost {text[pos:at]!r} before {piece!r}"
        pos = at + len(piece)
    assert set(text[pos:]) <= ASCII_SPACE, f"lost {text[pos:]!r} at the end"


def test_split_body_examples() -> None:
    assert split_body("one\ntwo\nthree", 8) == ["one\ntwo", "three"]
    assert split_body("short", 100) == ["short"]
    assert split_body("\n\nlead and trail\n\n", 100) == ["\n\nlead and trail\n\n"]  # fits: whole
    assert split_body("hello world again", 12) == ["hello world ", "again"]
    assert split_body("abc defg", 6) == ["abc ", "defg"]
    assert split_body("abcdefghijkl", 6) == ["abcdef", "ghijkl"]  # no space: a hard cut
    assert split_body("😀😀😀", 6) == ["😀", "😀", "😀"]  # never inside a character
    assert split_body("éééé", 6) == ["ééé", "é"]
    assert split_body("a\n\n\nbcdef", 6) == ["a\n\n", "bcdef"]  # blank lines packed, cut at


def test_split_body_counts_bytes_as_sent() -> None:
    # The stream escapes &, <, >, " and ': the budget is of the escaped text.
    assert split_body("a < b", 8) == ["a < b"]  # a &lt; b
    assert split_body("<<<<", 8) == ["<<", "<<"]
    assert split_body("&&&", 6) == ["&", "&", "&"]  # never inside &amp;
    assert split_body('""""', 12) == ['""', '""']
    assert split_body("'&amp;'", 21) == ["'&amp;'"]  # &apos;&amp;amp;&apos;: its own entity is text
    quotes = split_body('"' * 50_000, 60_000)
    assert [len(p) for p in quotes] == [10_000] * 5


@pytest.mark.parametrize("blank", ["", " ", "\n", " \n\t \n ", "\r\n"])
def test_split_body_of_blank_text_is_nothing(blank: str) -> None:
    assert split_body(blank, 100) == []
    assert split_body(blank * 50, 8) == []


@pytest.mark.parametrize("max_bytes", [-1, 0, 1, 5])
def test_split_body_refuses_a_budget_smaller_than_a_character(max_bytes: int) -> None:
    with pytest.raises(ConnectorError, match="at least 6") as err:
        split_body("😀", max_bytes)
    assert isinstance(err.value, EeveeError)


@given(safe_text, st.integers(min_value=6, max_value=80))
@settings(max_examples=120, deadline=None)
def test_split_body_fits_and_loses_nothing(text: str, max_bytes: int) -> None:
    pieces = split_body(text, max_bytes)
    _check_pieces(text, pieces, max_bytes)
    if len(escape(text).encode("utf-8")) <= max_bytes and text.strip(" \t\n\r\x0b\x0c"):
        assert pieces == [text]


@given(
    st.lists(st.text(alphabet="abcdéfg😀", min_size=1, max_size=12), min_size=1, max_size=40),
    st.integers(min_value=30, max_value=80),
)
@settings(max_examples=60, deadline=None)
def test_split_body_cuts_between_words_when_it_can(words: list[str], max_bytes: int) -> None:
    text = " ".join(words)
    pieces = split_body(text, max_bytes)
    _check_pieces(text, pieces, max_bytes)
    # Words are at most 48 bytes, the budget at least 30: a piece ends inside a word only
    # when that word has no room in the second half of the budget.
    for piece in pieces[:-1]:
        if not piece.endswith(" "):
            assert " " not in piece.encode()[max_bytes // 2 :].decode("utf-8", "ignore")


def test_split_body_of_a_100_kb_body() -> None:
    line = "word " * 19 + "ünïcødé ☃ 😀\n"
    assert len(line.encode()) == 116
    text = line * 900  # 105 kB
    pieces = split_body(text, 4000)
    _check_pieces(text, pieces, 4000)
    assert len(pieces) == 27  # 34 lines (and 33 line breaks) a piece
    assert all(p.endswith("😀") for p in pieces[:-1])  # whole lines were packed
    one_line = "x" * 100_000
    pieces = split_body(one_line, 60_000)
    assert [len(p) for p in pieces] == [60_000, 40_000]
