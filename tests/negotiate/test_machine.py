from __future__ import annotations

import pytest

from overlay.errors import LocalProtocolError, NegotiationError, ProtocolNotSupported
from overlay.negotiate import (
    MULTISTREAM_PROTOCOL,
    DialerNegotiation,
    ListenerNegotiation,
    MessageReader,
    Selected,
    Send,
    TooManyAttempts,
    encode_message,
)


def _decode_all(data: bytes) -> list[str]:
    reader = MessageReader()
    reader.feed(data)
    out = []
    while (msg := reader.next_message()) is not None:
        out.append(msg)
    return out


def test_dialer_sends_header_and_first_proposal_together() -> None:
    dialer = DialerNegotiation(["/a", "/b"])
    assert _decode_all(dialer.start()) == [MULTISTREAM_PROTOCOL, "/a"]


def test_dialer_falls_back_after_na_then_selects() -> None:
    dialer = DialerNegotiation(["/a", "/b"])
    dialer.start()
    assert dialer.receive(MULTISTREAM_PROTOCOL) == ()
    assert dialer.receive("na") == (Send(encode_message("/b")),)
    assert dialer.receive("/b") == (Selected("/b"),)
    assert dialer.done


def test_dialer_raises_when_all_refused() -> None:
    dialer = DialerNegotiation(["/a"])
    dialer.receive(MULTISTREAM_PROTOCOL)
    with pytest.raises(ProtocolNotSupported) as info:
        dialer.receive("na")
    assert info.value.protocols == ("/a",)


@pytest.mark.parametrize("first", ["/multistream/2.0.0", "na", "/a"])
def test_dialer_rejects_bad_header(first: str) -> None:
    dialer = DialerNegotiation(["/a"])
    with pytest.raises(NegotiationError):
        dialer.receive(first)


def test_dialer_rejects_wrong_echo() -> None:
    dialer = DialerNegotiation(["/a"])
    dialer.receive(MULTISTREAM_PROTOCOL)
    with pytest.raises(NegotiationError):
        dialer.receive("/other")


def test_dialer_refuses_reserved_or_empty() -> None:
    with pytest.raises(LocalProtocolError):
        DialerNegotiation([])
    with pytest.raises(LocalProtocolError):
        DialerNegotiation(["na"])


def test_listener_answers_na_then_echoes() -> None:
    listener = ListenerNegotiation(lambda p: p == "/b")
    assert _decode_all(listener.start()) == [MULTISTREAM_PROTOCOL]
    assert listener.receive(MULTISTREAM_PROTOCOL) == ()
    assert listener.receive("/a") == (Send(encode_message("na")),)
    assert listener.receive("ls") == (Send(encode_message("na")),)
    assert listener.receive("/b") == (Send(encode_message("/b")), Selected("/b"))
    assert listener.done


def test_listener_requires_header_first() -> None:
    listener = ListenerNegotiation(lambda p: True)
    with pytest.raises(NegotiationError):
        listener.receive("/a")


def test_listener_bounds_attempts() -> None:
    listener = ListenerNegotiation(lambda p: False, max_attempts=3)
    listener.receive(MULTISTREAM_PROTOCOL)
    for i in range(3):
        listener.receive(f"/p{i}")
    with pytest.raises(TooManyAttempts):
        listener.receive("/p3")


def test_machines_talk_to_each_other() -> None:
    dialer = DialerNegotiation(["/x", "/y", "/z"])
    listener = ListenerNegotiation(lambda p: p in ("/z", "/y"))
    to_listener = dialer.start()
    to_dialer = listener.start()
    selected: list[str] = []
    for _ in range(10):
        for msg in _decode_all(to_listener):
            to_listener = b""
            for out in listener.receive(msg):
                if isinstance(out, Send):
                    to_dialer += out.data
                else:
                    selected.append("L:" + out.protocol)
        msgs, to_dialer = _decode_all(to_dialer), b""
        for msg in msgs:
            for out in dialer.receive(msg):
                if isinstance(out, Send):
                    to_listener += out.data
                else:
                    selected.append("D:" + out.protocol)
        if dialer.done:
            break
    assert selected == ["L:/y", "D:/y"]
