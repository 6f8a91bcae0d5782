"""What a handler's annotation asks the bus to validate: plain functions and methods are read
without inspect and get_type_hints, with the same answers as the general way."""

from __future__ import annotations

import functools
from typing import Any, cast

import pytest

from eeveepy.bus.dispatch import resolve_decoder
from eeveepy.errors import OperatorError
from eeveepy.protocol.codec import AnyEnvelopeDecoder, EnvelopeDecoder
from eeveepy.protocol.models import Envelope, Ping, Pong


async def body(msg: Ping) -> None:
    pass


def enveloped(msg: Envelope[Pong], *rest: Any) -> None:
    pass


def any_kind(env: Envelope) -> None:  # type: ignore[type-arg]
    pass


class Handlers:
    async def on_ping(self, msg: Ping) -> None:
        pass

    def on_any(self, env: Envelope) -> None:  # type: ignore[type-arg]
        pass


def described(handler: Any) -> tuple[str, str | None, bool]:
    decoder, wants_envelope = resolve_decoder(handler)
    model = decoder.model.__name__ if isinstance(decoder, EnvelopeDecoder) else None
    return type(decoder).__name__, model, wants_envelope


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (body, ("EnvelopeDecoder", "Ping", False)),
        (enveloped, ("EnvelopeDecoder", "Pong", True)),
        (any_kind, ("AnyEnvelopeDecoder", None, True)),
        (Handlers().on_ping, ("EnvelopeDecoder", "Ping", False)),
        (Handlers().on_any, ("AnyEnvelopeDecoder", None, True)),
        # the general way: a wrapped function (its annotations are the wrapped one's)
        (functools.wraps(body)(lambda msg: None), ("EnvelopeDecoder", "Ping", False)),
    ],
)
def test_the_annotation_gives_the_decoder(handler: Any, expected: tuple[str, str, bool]) -> None:
    assert described(handler) == expected
    assert isinstance(resolve_decoder(handler)[0], EnvelopeDecoder | AnyEnvelopeDecoder)


def test_what_cannot_be_read_is_said_as_before() -> None:
    def unknown(msg: NoSuchModel) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    def bare(msg) -> None:  # type: ignore[no-untyped-def]
        pass

    def nothing() -> None:
        pass

    def wrong(msg: int) -> None:
        pass

    with pytest.raises(OperatorError, match="cannot read the type hints"):
        resolve_decoder(unknown)
    with pytest.raises(OperatorError, match="annotate the parameter"):
        resolve_decoder(bare)
    with pytest.raises(OperatorError, match="must take one parameter"):
        resolve_decoder(cast(Any, nothing))
    with pytest.raises(OperatorError, match="annotated <class 'int'>"):
        resolve_decoder(wrong)
