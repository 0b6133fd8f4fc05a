"""The DCUtR state machines at fixed times: both roles against each other,
SYNC → punch timing, three attempts with back-off, address filtering,
unexpected and malformed input, and the per-peer session limit."""

from __future__ import annotations

import random

import pytest
from multiaddr import Multiaddr

from overlay.nat.dcutr_core import (
    AddrContext,
    DcutrConfig,
    DcutrInitiator,
    DcutrResponder,
    Dial,
    Failed,
    PunchLimiter,
    SendMessage,
    SendPunchPackets,
    Succeeded,
    filter_addrs,
)
from overlay.nat.dcutr_messages import HolePunch, MessageType

CFG = DcutrConfig(allow_private=True)


def ma(text: str) -> bytes:
    return Multiaddr(text).to_bytes()


B_ADDRS = (ma("/ip4/203.0.113.2/udp/4001/quic-v1"),)
A_ADDRS = (ma("/ip4/203.0.113.1/udp/4001/quic-v1"), ma("/ip4/10.0.1.10/udp/4001/quic-v1"))
CTX_B = AddrContext(own_ips=frozenset({"10.0.2.10"}))
CTX_A = AddrContext(own_ips=frozenset({"10.0.1.10"}))


def only(actions: list[object], kind: type) -> object:
    assert len(actions) == 1 and isinstance(actions[0], kind), actions
    return actions[0]


def message(actions: list[object]) -> HolePunch:
    action = only(actions, SendMessage)
    assert isinstance(action, SendMessage)
    return action.message


def pair(config: DcutrConfig = CFG) -> tuple[DcutrInitiator, DcutrResponder]:
    b = DcutrInitiator(config, B_ADDRS, CTX_B, random.Random(1))
    a = DcutrResponder(config, A_ADDRS, CTX_A, random.Random(2), now=0.0)
    return b, a


def exchange(b: DcutrInitiator, a: DcutrResponder, t0: float, one_way: float) -> Dial:
    """One CONNECT / CONNECT / SYNC round starting at ``t0``; returns A's dial."""
    connect = message(b.start(t0) if b.state == "idle" else b.on_timer(t0))
    assert connect == HolePunch(MessageType.CONNECT, B_ADDRS)
    answer = a.on_message(connect, t0 + one_way)
    reply = message(answer[:1])
    assert reply == HolePunch(MessageType.CONNECT, A_ADDRS)
    # Ours: A dials at once too, in the background, beside its answer.
    assert answer[1:] == [Dial(a.peer_addrs, CFG.dial_timeout, early=True)]
    sync = message(b.on_message(reply, t0 + 2 * one_way))
    assert sync == HolePunch(MessageType.SYNC)
    dial = only(a.on_message(sync, t0 + 3 * one_way), Dial)
    assert isinstance(dial, Dial)
    return dial


def test_happy_path_timing_sync_then_punch_after_half_the_rtt() -> None:
    b, a = pair()
    dial = exchange(b, a, 0.0, 0.05)
    # A dials B's address at once, as the QUIC client, within its timeout.
    assert [c.multiaddr for c in dial.addrs] == [Multiaddr(B_ADDRS[0])]
    assert dial.timeout == CFG.dial_timeout
    assert b.rtt == pytest.approx(0.1)
    # B punches RTT/2 after SYNC: when the SYNC reaches A, not before.
    assert b.next_deadline() == pytest.approx(0.15)
    assert b.on_timer(0.149) == []
    sync_at = b.next_deadline() or 0
    punch = only(b.on_timer(sync_at), SendPunchPackets)
    assert isinstance(punch, SendPunchPackets)
    # Only A's public address: its 10.0.1.0/24 LAN is not B's.
    assert [(c.ip, c.port) for c in punch.addrs] == [("203.0.113.1", 4001)]
    assert punch.until == pytest.approx(0.15 + CFG.punch_duration)
    assert punch.payload[0] & 0x40 == 0 and 64 <= len(punch.payload) <= 128
    gap = (b.next_deadline() or 0) - sync_at
    assert 0.010 <= gap <= 0.200
    again = only(b.on_timer(b.next_deadline() or 0), SendPunchPackets)
    assert isinstance(again, SendPunchPackets) and again.payload != punch.payload
    # A's QUIC dial arrives at B: both sides are done on the first attempt.
    assert b.on_direct_connection(0.3) == [Succeeded(1, pytest.approx(0.1))]
    assert a.on_dial_result(True, 0.3) == [Succeeded(1, None)]
    assert b.next_deadline() is None and a.next_deadline() is None


def test_early_dial_on_connect_then_the_spec_dial_on_sync() -> None:
    b, a = pair()
    connect = message(b.start(0.0))
    answer = a.on_message(connect, 0.05)
    early = only(answer[1:], Dial)
    assert isinstance(early, Dial) and early.early
    assert [(c.ip, c.port) for c in early.addrs] == [("203.0.113.2", 4001)]
    sync = message(b.on_message(message(answer[:1]), 0.1))
    spec = only(a.on_message(sync, 0.15), Dial)
    # The SYNC still brings the spec's dial (fresh connections beside the
    # early one), reported with on_dial_result.
    assert isinstance(spec, Dial) and not spec.early and spec.addrs == early.addrs
    # The early dial got through first: it shows as a direct connection.
    assert a.on_direct_connection(0.16) == [Succeeded(1, None)]
    assert a.on_dial_result(True, 0.2) == []


def test_no_early_dial_when_switched_off() -> None:
    b, a = pair(DcutrConfig(allow_private=True, early_dial=False))
    answer = a.on_message(message(b.start(0.0)), 0.05)
    assert message(answer) == HolePunch(MessageType.CONNECT, A_ADDRS)


def test_the_sync_wait_is_capped() -> None:
    b, a = pair(DcutrConfig(allow_private=True, max_sync_delay=0.5))
    exchange(b, a, 0.0, 2.0)  # a 4 s relayed round trip
    assert b.next_deadline() == pytest.approx(4.0 + 0.5)


def test_three_attempts_with_back_off_then_failure() -> None:
    b, a = pair()
    t = 0.0
    starts = []
    for attempt in (1, 2, 3):
        starts.append(t)
        exchange(b, a, t, 0.01)
        assert b.attempt == attempt and a.attempt == attempt
        # B punches for its whole window and nothing arrives; A's dial fails.
        punch_at = b.next_deadline() or 0
        b.on_timer(punch_at)
        assert a.on_dial_result(False, punch_at + CFG.dial_timeout) == ([] if attempt < 3 else
                                                                       [Failed("no direct connection after 3 attempts", 3)])
        end = punch_at + CFG.punch_duration
        while (deadline := b.next_deadline()) is not None and deadline < end:
            assert isinstance(b.on_timer(deadline)[0], SendPunchPackets)
        result = b.on_timer(end)
        if attempt < 3:
            assert result == []
            # Back-off: 1 s, then 2 s.
            assert b.next_deadline() == pytest.approx(end + CFG.retry_backoff * 2 ** (attempt - 1))
            t = b.next_deadline() or 0
        else:
            assert result == [Failed("no direct connection after 3 attempts", 3)]
    assert starts[1] > starts[0] and starts[2] - starts[1] > starts[1] - starts[0]


def test_the_responder_gives_up_after_its_last_attempt_and_ignores_more() -> None:
    config = DcutrConfig(allow_private=True, max_attempts=1)
    b, a = pair(config)
    exchange(b, a, 0.0, 0.01)
    a.on_dial_result(False, 1.0)
    b2 = DcutrInitiator(config, B_ADDRS, CTX_B, random.Random(3))
    result = a.on_message(message(b2.start(2.0)), 2.0)
    assert a.outcome is not None  # already failed after its only attempt
    assert result == []


def test_unexpected_messages_fail_as_protocol_errors() -> None:
    b, a = pair()
    failed = only(a.on_message(HolePunch(MessageType.SYNC), 0.0), Failed)
    assert isinstance(failed, Failed) and failed.protocol_error and "unexpected SYNC" in failed.reason
    b.start(0.0)
    failed = only(b.on_message(HolePunch(MessageType.SYNC), 0.1), Failed)
    assert isinstance(failed, Failed) and failed.protocol_error
    # After the end nothing more happens.
    assert b.on_message(HolePunch(MessageType.CONNECT, A_ADDRS), 0.2) == []


def test_a_malformed_message_fails_the_session_and_costs_the_stream() -> None:
    b, _ = pair()
    b.start(0.0)
    failed = only(b.on_closed(0.1, "DcutrDecodeError: unknown type"), Failed)
    assert isinstance(failed, Failed) and failed.protocol_error
    _, a = pair()
    failed = only(a.on_closed(0.1), Failed)
    assert isinstance(failed, Failed) and not failed.protocol_error


def test_silence_times_out() -> None:
    b, a = pair()
    b.start(0.0)
    assert b.on_timer(CFG.message_timeout - 0.001) == []
    failed = only(b.on_timer(CFG.message_timeout), Failed)
    assert isinstance(failed, Failed) and "did not answer" in failed.reason
    failed = only(a.on_timer(CFG.message_timeout), Failed)
    assert isinstance(failed, Failed) and "silent" in failed.reason


def test_a_peer_with_no_usable_address_fails_without_punching() -> None:
    b, a = pair()
    b.start(0.0)
    reply = HolePunch(MessageType.CONNECT, (ma("/ip4/10.9.9.9/udp/1/quic-v1"), b"\xff\xff"))
    failed = only(b.on_message(reply, 0.1), Failed)
    assert isinstance(failed, Failed) and not failed.protocol_error
    assert "no usable address" in failed.reason and "another network" in failed.reason
    failed = only(a.on_message(HolePunch(MessageType.CONNECT, ()), 0.0), Failed)
    assert isinstance(failed, Failed) and "it sent none" in failed.reason


def _kept(addrs: list[str], ctx: AddrContext, *, allow_private: bool = False,
          max_addrs: int = 8) -> list[str]:
    kept, _ = filter_addrs([ma(a) if a.startswith("/") else a.encode() for a in addrs], ctx,
                           max_addrs=max_addrs, allow_private=allow_private)
    return [f"{c.ip}:{c.port}" for c in kept]


def test_filter_private_ranges_only_within_our_own_network() -> None:
    ctx = AddrContext(own_ips=frozenset({"192.168.1.20"}))
    addrs = ["/ip4/192.168.1.30/udp/1/quic-v1", "/ip4/192.168.2.30/udp/1/quic-v1",
             "/ip4/10.0.0.1/udp/1/quic-v1", "/ip4/8.8.8.8/udp/1/quic-v1"]
    assert _kept(addrs, ctx) == ["192.168.1.30:1", "8.8.8.8:1"]


def test_filter_lab_ranges_and_loopback_need_the_lab_flag() -> None:
    ctx = AddrContext(own_ips=frozenset({"127.0.0.1"}))
    addrs = ["/ip4/203.0.113.5/udp/1/quic-v1", "/ip4/127.0.0.1/udp/2/quic-v1"]
    assert _kept(addrs, ctx) == []
    assert _kept(addrs, ctx, allow_private=True) == ["203.0.113.5:1", "127.0.0.1:2"]
    # Loopback only when we are on loopback ourselves.
    assert _kept(addrs, AddrContext(), allow_private=True) == ["203.0.113.5:1"]


def test_filter_drops_contradicted_unparsable_dns_and_caps_the_count() -> None:
    ctx = AddrContext(contradicted=frozenset({("8.8.8.8", 1)}),
                      contradicted_ips=frozenset({"9.9.9.9"}))
    addrs = ["/ip4/8.8.8.8/udp/1/quic-v1", "/ip4/8.8.8.8/udp/2/quic-v1",
             "/ip4/9.9.9.9/udp/3/quic-v1", "/dns4/example.com/udp/4/quic-v1",
             "/ip4/1.1.1.1/tcp/4001", "garbage", "/ip4/0.0.0.0/udp/5/quic-v1",
             "/ip4/224.0.0.1/udp/5/quic-v1", "/ip4/169.254.1.1/udp/5/quic-v1",
             "/ip4/8.8.8.8/udp/2/quic-v1"]
    kept, dropped = filter_addrs([ma(a) if a.startswith("/") else a.encode() for a in addrs],
                                 ctx, max_addrs=8)
    assert [(c.ip, c.port) for c in kept] == [("8.8.8.8", 2)]
    assert len(dropped) == 8
    many = [f"/ip4/8.8.4.{i}/udp/1/quic-v1" for i in range(1, 40)]
    assert len(_kept(many, AddrContext(), max_addrs=3)) == 3


def test_thousands_of_addresses_cost_a_bounded_look() -> None:
    raw = [ma(f"/ip4/8.8.{i // 256}.{i % 256}/udp/1/quic-v1") for i in range(5000)]
    kept, dropped = filter_addrs(raw, AddrContext(), max_addrs=8)
    assert len(kept) == 8 and len(kept) + len(dropped) <= 32


def test_punch_limiter_caps_sessions_per_peer() -> None:
    limiter = PunchLimiter(DcutrConfig(sessions_per_peer=3, session_window=600.0))
    assert [limiter.allow("p", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("q", 0.0)
    assert not limiter.allow("p", 100.0)
    assert limiter.allow("p", 200.0)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DcutrConfig(dial_timeout=6.0, punch_duration=5.0)
    with pytest.raises(ValueError):
        DcutrConfig(max_attempts=0)
    with pytest.raises(ValueError):
        DcutrConfig(punch_interval=(0.3, 0.2))


def test_the_initiator_names_the_failed_attempts_when_the_responder_gives_up() -> None:
    b, a = pair(DcutrConfig(allow_private=True, max_attempts=1))
    exchange(b, a, 0.0, 0.01)
    b.on_timer(b.next_deadline() or 0)  # punching
    assert a.on_dial_result(False, 2.0) == [Failed("no direct connection after 1 attempts", 1)]
    failed = only(b.on_closed(2.1), Failed)
    assert isinstance(failed, Failed) and not failed.protocol_error
    assert failed.reason == "no direct connection after 1 attempts; the peer stopped"
