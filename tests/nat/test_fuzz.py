"""Fuzzing the STUN decoder: any bytes give a message or a typed error."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.nat.agent import AgentConfig, StunAgent
from overlay.nat.errors import StunDecodeError
from overlay.nat.stun import (
    MAX_STUN_MESSAGE,
    BindingRequest,
    BindingResponse,
    decode_stun,
    encode_binding_request,
    encode_binding_response,
)

COOKIE = b"\x21\x12\xa4\x42"


@st.composite
def stunlike(draw: st.DrawFn) -> bytes:
    """Valid headers with random attribute bytes, so the fuzzer gets past
    the cookie check into aioice's attribute parsing."""
    body = draw(st.binary(max_size=200))
    kind = draw(st.sampled_from([0x0001, 0x0101, 0x0111, 0x0011, 0x0003]))
    length = draw(st.one_of(st.just(len(body)), st.integers(0, 0xFFFF)))
    return (kind.to_bytes(2, "big") + length.to_bytes(2, "big") + COOKIE
            + draw(st.binary(min_size=12, max_size=12)) + body)


@st.composite
def tlv_messages(draw: st.DrawFn) -> bytes:
    """Well-framed messages of random attributes with random values."""
    attrs = b""
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from([0x0001, 0x0003, 0x0009, 0x0020, 0x802C, 0x8028,
                                     0x0008, 0x8022, 0x7777]))
        value = draw(st.binary(max_size=24))
        attrs += kind.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value
        attrs += bytes(-len(value) % 4)
    kind = draw(st.sampled_from([0x0001, 0x0101, 0x0111]))
    return (kind.to_bytes(2, "big") + len(attrs).to_bytes(2, "big") + COOKIE
            + bytes(12) + attrs)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=MAX_STUN_MESSAGE + 40), stunlike(), tlv_messages()))
def test_decoder_raises_only_typed_errors(data: bytes) -> None:
    try:
        decoded = decode_stun(data)
    except StunDecodeError:
        return
    assert isinstance(decoded, (BindingRequest, BindingResponse)) or decoded.code >= 0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=12),
       st.tuples(st.ip_addresses().map(str), st.integers(0, 65535)))
def test_response_roundtrip(tid: bytes, source: tuple[str, int]) -> None:
    decoded = decode_stun(encode_binding_response(tid, source))
    assert isinstance(decoded, BindingResponse)
    assert decoded.transaction_id == tid and decoded.mapped == source and decoded.from_xor


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=300), stunlike(), tlv_messages()), max_size=20))
def test_agent_survives_any_datagrams(datagrams: list[bytes]) -> None:
    agent = StunAgent(random.Random(0), AgentConfig(serve=True))
    for data in datagrams:
        for action in agent.on_datagram(data, ("198.51.100.7", 4000), 1.0):
            assert decode_stun(action.data) is not None  # type: ignore[union-attr]
    assert agent.answered + agent.dropped + agent.refused == len(datagrams)


def test_request_encoding_is_stable() -> None:
    assert decode_stun(encode_binding_request(bytes(12))) == BindingRequest(bytes(12))
