"""The STUN codec and the client transaction, at fixed times."""

from __future__ import annotations

import random

import pytest
from aioice import stun as aioice_stun

from overlay.errors import DecodeError, MessageTooLarge
from overlay.nat.errors import StunDecodeError, StunMessageTooLarge
from overlay.nat.stun import (
    MAX_STUN_MESSAGE,
    BindingErrorResponse,
    BindingFailed,
    BindingRequest,
    BindingResponse,
    BindingSucceeded,
    BindingTimedOut,
    BindingTransaction,
    RetransmitConfig,
    SendDatagram,
    decode_stun,
    encode_binding_request,
    encode_binding_response,
)

SERVER = ("203.0.113.10", 3478)
TID = bytes(range(12))


def response(tid: bytes, **attributes: object) -> bytes:
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.RESPONSE, tid)
    message.attributes.update(attributes)
    message.add_fingerprint()
    return bytes(message)


def test_request_roundtrip_has_fingerprint_and_change_flags() -> None:
    data = encode_binding_request(TID, change_port=True)
    assert aioice_stun.parse_message(data).attributes["FINGERPRINT"]
    assert decode_stun(data) == BindingRequest(TID, change_ip=False, change_port=True)
    assert decode_stun(encode_binding_request(TID)) == BindingRequest(TID)


@pytest.mark.parametrize("source", [("198.51.100.7", 40001), ("2001:db8::5", 9)])
def test_response_carries_xor_mapped_address(source: tuple[str, int]) -> None:
    data = encode_binding_response(TID, source)
    assert len(data) == (40 if ":" not in source[0] else 52)
    parsed = aioice_stun.parse_message(data)
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == source
    assert "FINGERPRINT" in parsed.attributes
    assert decode_stun(data) == BindingResponse(TID, source, from_xor=True)


def test_xor_mapped_address_wins_over_mapped_address() -> None:
    data = response(TID, **{"MAPPED-ADDRESS": ("10.9.9.9", 1),
                            "XOR-MAPPED-ADDRESS": ("198.51.100.7", 4000)})
    decoded = decode_stun(data)
    assert isinstance(decoded, BindingResponse)
    assert decoded.mapped == ("198.51.100.7", 4000) and decoded.from_xor


def test_mapped_address_is_the_fallback_and_other_address_is_read() -> None:
    data = response(TID, **{"MAPPED-ADDRESS": ("198.51.100.7", 4000),
                            "OTHER-ADDRESS": ("203.0.113.11", 3479),
                            "RESPONSE-ORIGIN": ("203.0.113.10", 3478)})
    decoded = decode_stun(data)
    assert decoded == BindingResponse(TID, ("198.51.100.7", 4000), from_xor=False,
                                      other_address=("203.0.113.11", 3479),
                                      response_origin=("203.0.113.10", 3478))


def test_error_response_is_decoded() -> None:
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.ERROR, TID)
    message.attributes["ERROR-CODE"] = (420, "Unknown Attribute")
    assert decode_stun(bytes(message)) == BindingErrorResponse(TID, 420, "Unknown Attribute")


@pytest.mark.parametrize("data, why", [
    (b"", "not a STUN"),
    (b"\xc0" + bytes(30), "not a STUN"),
    (b"\x01\x01\x00\x00" + b"\x00\x00\x00\x00" + bytes(12), "magic cookie"),
    (encode_binding_request(TID)[:-1], "malformed"),
    (response(TID), "without a mapped address"),
    (bytes(aioice_stun.Message(aioice_stun.Method.ALLOCATE, aioice_stun.Class.REQUEST, TID)),
     "not binding"),
])
def test_bad_messages_raise_typed_errors(data: bytes, why: str) -> None:
    with pytest.raises(StunDecodeError, match=why):
        decode_stun(data)


def test_corrupt_fingerprint_is_refused() -> None:
    data = bytearray(encode_binding_response(TID, ("198.51.100.7", 4000)))
    data[-1] ^= 1
    with pytest.raises(StunDecodeError):
        decode_stun(bytes(data))


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(StunMessageTooLarge) as info:
        decode_stun(b"\x00" * (MAX_STUN_MESSAGE + 1))
    assert isinstance(info.value, MessageTooLarge) and isinstance(info.value, DecodeError)
    assert info.value.limit == MAX_STUN_MESSAGE


# -- the transaction ----------------------------------------------------------------


def test_retransmission_schedule_doubles_and_times_out() -> None:
    config = RetransmitConfig(initial_rto=0.5, max_transmissions=4)
    assert config.timeout == 7.5
    tx = BindingTransaction(SERVER, random.Random(1), 100.0, config)
    sends: list[float] = []
    now = 100.0
    result: list[object] = []
    while (deadline := tx.next_deadline()) is not None:
        assert tx.on_timer(deadline - 0.001) == []  # nothing before its time
        now = deadline
        for action in tx.on_timer(now):
            if isinstance(action, SendDatagram):
                assert action.data == tx.request and action.addr == SERVER
                sends.append(now - 100.0)
            else:
                result.append(action)
    assert sends == [0.0, 0.5, 1.5, 3.5]
    assert result == [BindingTimedOut(SERVER, 4)]
    assert now - 100.0 == 7.5 and tx.done


def test_transaction_ids_come_from_the_injected_random() -> None:
    a = BindingTransaction(SERVER, random.Random(7), 0.0)
    b = BindingTransaction(SERVER, random.Random(7), 0.0)
    c = BindingTransaction(SERVER, random.Random(8), 0.0)
    assert a.transaction_id == b.transaction_id != c.transaction_id
    assert len(a.transaction_id) == 12 and a.request == b.request


def test_response_ends_the_transaction_with_the_mapping() -> None:
    tx = BindingTransaction(SERVER, random.Random(1), 10.0)
    assert tx.on_timer(10.0)
    assert tx.on_timer(10.5)  # one retransmission
    answer = decode_stun(encode_binding_response(tx.transaction_id, ("198.51.100.7", 5000)))
    assert isinstance(answer, BindingResponse)
    assert tx.on_response(answer, ("203.0.113.99", 3478), 10.6) == []  # wrong source
    done = tx.on_response(answer, SERVER, 10.75)
    assert done == [BindingSucceeded(SERVER, answer, SERVER, 0.75)]
    assert tx.done and tx.next_deadline() is None
    assert tx.on_response(answer, SERVER, 10.8) == [] and tx.on_timer(99.0) == []


def test_response_with_another_transaction_id_is_ignored() -> None:
    tx = BindingTransaction(SERVER, random.Random(1), 0.0)
    tx.on_timer(0.0)
    other = BindingResponse(bytes(12), ("198.51.100.7", 1), True)
    assert tx.on_response(other, SERVER, 0.1) == [] and not tx.done


def test_change_request_accepts_an_answer_from_another_address() -> None:
    tx = BindingTransaction(SERVER, random.Random(1), 0.0, change_ip=True, change_port=True)
    assert decode_stun(tx.request) == BindingRequest(tx.transaction_id, True, True)
    tx.on_timer(0.0)
    answer = BindingResponse(tx.transaction_id, ("198.51.100.7", 1), True)
    [done] = tx.on_response(answer, ("203.0.113.11", 3479), 0.2)
    assert isinstance(done, BindingSucceeded) and done.source == ("203.0.113.11", 3479)
    assert done.change_ip and done.change_port


def test_error_response_fails_the_transaction() -> None:
    tx = BindingTransaction(SERVER, random.Random(1), 0.0)
    tx.on_timer(0.0)
    assert tx.on_response(BindingErrorResponse(tx.transaction_id, 400, "Bad Request"),
                          SERVER, 0.1) == [BindingFailed(SERVER, 400, "Bad Request")]


@pytest.mark.parametrize("kwargs", [{"initial_rto": 0}, {"max_transmissions": 0},
                                    {"max_transmissions": 17}])
def test_retransmit_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetransmitConfig(**kwargs)  # type: ignore[arg-type]
