"""ChatOps RPC client, the pure parts: PROTOCOL.md's client conformance cases, listings, the
Ruby regex translation, the display rules, URL checks; and fuzzing of the parsers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eeveepy.aio import Backoff
from eeveepy.errors import EndpointError, ListingError, RegexError
from operators.crpc.invoke import render, request_body
from operators.crpc.listing import Namespace, parse_listing
from operators.crpc.rubyre import compile_method, translate
from operators.crpc.signing import load_private_key, read_pem, sign_headers, signing_string
from operators.crpc.transport import Answer, check_url, is_loopback
from operators.router.parse import parse_arguments, parse_long_args

DATA = Path(__file__).parent / "data" / "crpc"
WCID = r"(?:where can i deploy|wcid)(?: (?<app>\S+))?"


def listing(**methods: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "namespace": "deploy",
            "help": None,
            "error_response": None,
            "methods": methods,
            "version": "3",
        }
    ).encode()


def namespace(prefix: str = "test-prefix") -> Namespace:
    raw = listing(wcid={"regex": WCID, "params": ["app"], "path": "wcid", "help": "wcid APP"})
    return Namespace.build("http://x.test/_chatops", prefix, parse_listing(raw))


def invoke(ns: Namespace, text: str) -> tuple[str, dict[str, str]] | None:
    """What the router and the client together make of ``text`` after the prefix."""
    parsed = parse_arguments(None, text)
    assert parsed is not None
    args, rest = parsed
    found = ns.match(rest, args)
    return None if found is None else (found[0].name, found[1])


# -- PROTOCOL.md client conformance ----------------------------------------------------------


def test_conformance_matching_and_long_args() -> None:
    ns = namespace()
    assert invoke(ns, "where can i deploy foobar") == ("wcid", {"app": "foobar"})
    assert invoke(ns, "wcid") == ("wcid", {})  # a group that did not match is left out
    assert invoke(ns, "WCID Foo") == ("wcid", {"app": "Foo"})  # case-insensitive
    assert invoke(ns, "where can i deploy foobar --fruit apple --vegetable green celery") == (
        "wcid",
        {"app": "foobar", "fruit": "apple", "vegetable": "green celery"},
    )
    assert invoke(ns, "wcid foobar --this-is-sparta") == (
        "wcid",
        {"app": "foobar", "this-is-sparta": "true"},
    )
    assert invoke(ns, "wcid foobar --app override") == ("wcid", {"app": "override"})
    # anchored at both ends: the command in the middle of the text does not match
    assert invoke(ns, "please wcid foobar") is None
    assert invoke(ns, "wcid foobar now") is None


def test_conformance_prefix_is_the_command_word() -> None:
    # With a prefix, the method is reached only as "PREFIX METHOD": the router dispatches on
    # the prefix, and the text after it is what the method regex must match.
    from operators.router.parse import split_command

    line = split_command("!test-prefix wcid foo", prefixes=["!"], names=["eevee"], private=False)
    assert line is not None
    assert (line.name, line.text) == ("test-prefix", "wcid foo")
    unprefixed = split_command("!wcid foo", prefixes=["!"], names=["eevee"], private=False)
    assert unprefixed is not None
    assert unprefixed.name == "wcid"
    assert split_command("please .deploy wcid", prefixes=["."], names=[], private=False) is None


def test_conformance_post_body_and_signing_string() -> None:
    body = request_body("alice", "#ops", "wcid", {"app": "hubot"})
    assert json.loads(body) == {
        "user": "alice",
        "room_id": "#ops",
        "method": "wcid",
        "params": {"app": "hubot"},
    }
    assert list(json.loads(body)) == ["user", "room_id", "method", "params"]
    url = "http://x.test/_chatops/wcid"
    key = load_private_key(read_pem(file=DATA / "sample_client_private.pem"))
    headers = sign_headers(key, "eevee", url, body, nonce="N", timestamp="T")
    assert signing_string(url, "N", "T", body) == b"http://x.test/_chatops/wcid\nN\nT\n" + body
    assert headers["Chatops-Signature"].startswith("Signature keyid=eevee,signature=")
    assert '"' not in headers["Chatops-Signature"]  # unquoted, as real peers send


# -- listings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3", 3, None, "missing"])
def test_listing_versions(version: object) -> None:
    data = {"namespace": "n", "help": None, "error_response": None, "methods": {}}
    if version != "missing":
        data["version"] = version
    assert parse_listing(json.dumps(data).encode()).version == 3


def test_listing_method_url_and_bad_listings() -> None:
    raw = listing(a={"regex": "a", "path": "a"}, b={"regex": "b"}, c={"regex": "(?<x"})
    ns = Namespace.build("http://h/_chatops", "p", parse_listing(raw))
    assert [(m.name, m.url) for m in ns.methods] == [
        ("a", "http://h/_chatops/a"),
        ("b", "http://h/_chatops"),  # no path: the listing URL
    ]
    assert len(ns.skipped) == 1
    assert ns.skipped[0].startswith("c: ")
    for bad in (b"<html>", b"[]", b"{}", b'{"methods": {"a": {"params": []}}}', b"\xff"):
        with pytest.raises(ListingError):
            parse_listing(bad)


def test_help_text() -> None:
    ns = namespace("ops")
    assert ns.help_text("!") == "!ops:\n!ops wcid APP"
    assert "wcid" in ns.summary()


# -- Ruby regexes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ruby", "python"),
    [
        ("(?<app>\\S+)", "(?P<app>\\S+)"),
        ("(?'app'x)", "(?P<app>x)"),
        ("\\(?<app>x\\)", "\\(?<app>x\\)"),  # an escaped parenthesis is not a group
        ("(?<=a)b(?<!c)", "(?<=a)b(?<!c)"),  # lookbehinds stay
        ("[(?<x>)]", "[(?<x>)]"),  # inside a class: literal characters
        ("\\Aabc\\z", "\\Aabc\\Z"),
        ("abc\\Z", "abc(?=\\n?\\Z)"),
        ("\\h+", "[0-9a-fA-F]+"),
        ("[\\h_]", "[0-9a-fA-F_]"),
        ("[[:alpha:]]+", "[a-zA-Z]+"),
        ("(?<n>a)\\k<n>", "(?P<n>a)(?P=n)"),
        ("(?m:a.b)", "(?s:a.b)"),
        ("[]a]", "[\\]a]"),
    ],
)
def test_translate(ruby: str, python: str) -> None:
    assert translate(ruby) == python
    re.compile(python)


@pytest.mark.parametrize("ruby", ["\\p{Alpha}", "\\g<x>", "(?(1)a|b)", "[a&&b]", "[[:nope:]]"])
def test_untranslatable(ruby: str) -> None:
    with pytest.raises(RegexError):
        translate(ruby)


def test_compile_method_strips_anchors() -> None:
    pattern = compile_method("^deploy (?<app>\\w+)$")
    assert pattern.fullmatch("DEPLOY web") is not None
    assert compile_method("cost\\$").fullmatch("cost$") is not None  # an escaped $ stays
    with pytest.raises(RegexError):
        compile_method("(")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from("()?<>'=!:\\[]^$kzZhHAp{}&-amx.+*|a1_ "), max_size=40))
def test_fuzz_regex_translation_raises_only_regex_error(text: str) -> None:
    try:
        pattern = compile_method(text)
    except RegexError:
        return
    pattern.fullmatch("some text")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_long_args_never_escape(text: str) -> None:
    args, rest = parse_long_args(text)
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in args.items())
    assert " --" not in " " + rest  # every argument was cut off
    ns = namespace()
    ns.match(rest, args)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_listing_and_display(raw: bytes) -> None:
    try:
        Namespace.build("http://h", "p", parse_listing(raw))
    except ListingError:
        pass
    out = render(Answer(status=200, body=raw), command="!p x", user="al", error_response=None)
    assert out is None or isinstance(out, str)


# -- display ----------------------------------------------------------------------------------


def show(body: object, status: int = 200, error_response: str | None = None) -> str | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = Answer(status=status, body=raw)
    return render(answer, command="!ops wcid", user="alice", error_response=error_response)


def test_display_rules() -> None:
    assert show({"jsonrpc": "2.0", "id": None, "result": "deploy away"}) == "deploy away"
    assert show({"result": "  "}) is None  # blank: nothing
    assert show({"result": None}) == "`!ops wcid` returned no output"
    assert show({"error": {"code": -32601, "message": "Method not found"}}, 404) == (
        "Method not found"
    )
    assert show({"result": "x", "title": "Deploys", "title_link": "https://d/1"}) == (
        "Deploys <https://d/1>\nx"
    )
    assert show({"result": "", "image_url": "https://i/1.png"}) == "https://i/1.png"
    assert show(b"<html>oops</html>", 500) == "Error: <html>oops</html>"
    assert show({"jsonrpc": "2.0"}) == "Error: Invalid response, missing result (HTTP code: 200)"
    assert show(None) == "Error: Invalid output, null"
    assert show(b"x" * 1000, 502) == "Error: " + "x" * 300
    assert show(b"nope", 500, error_response="deploys are down") == "alice: deploys are down"
    refused = render(
        Answer(error="ClientConnectorError: refused"),
        command="!ops wcid",
        user="alice",
        error_response=None,
    )
    assert refused == "Error: ClientConnectorError: refused"


# -- URLs and backoff -------------------------------------------------------------------------


def test_urls() -> None:
    assert check_url("https://ci.example/_chatops/", allow_plaintext=False) == (
        "https://ci.example/_chatops"
    )
    assert check_url("http://127.0.0.1:8080/_chatops", allow_plaintext=False)
    assert check_url("http://localhost/_chatops", allow_plaintext=False)
    assert check_url("http://ci.internal/_chatops", allow_plaintext=True)
    with pytest.raises(EndpointError, match="allow_plaintext"):
        check_url("http://ci.example/_chatops", allow_plaintext=False)
    for bad in ("ftp://x/", "https://x:443/_chatops", "https://x/_chatops?a=1", "nonsense"):
        with pytest.raises(EndpointError):
            check_url(bad, allow_plaintext=True)
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("127.1.2.3")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")


def test_backoff_grows_by_half_up_to_the_maximum() -> None:
    backoff = Backoff(15.0, 3600.0, lambda: 1.0, factor=1.5)
    delays = [backoff.next() for _ in range(20)]
    assert delays[:3] == [15.0, 22.5, 33.75]
    assert max(delays) == 3600.0
    with pytest.raises(ValueError, match="below 1"):
        Backoff(1.0, 2.0, factor=0.5)
