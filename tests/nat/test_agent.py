"""One socket's STUN agent: a client and a responder wired back to back
(the pair helper), at fixed times."""

from __future__ import annotations

import random

from overlay.nat.agent import AgentConfig, RateLimiter, StunAgent
from overlay.nat.stun import (
    BindingSucceeded,
    BindingTimedOut,
    SendDatagram,
    decode_stun,
    encode_binding_request,
)

CLIENT_LOCAL = ("10.0.1.10", 4001)
CLIENT_MAPPED = ("198.51.100.1", 4001)
SERVER = ("203.0.113.10", 4001)


def exchange(client: StunAgent, server: StunAgent, now: float) -> list[object]:
    """Carry the client's sends to the server as if through a NAT that maps
    CLIENT_LOCAL to CLIENT_MAPPED, and the answers back."""
    results: list[object] = []
    pending = client.begin(SERVER, now)
    while pending:
        action = pending.pop(0)
        if isinstance(action, SendDatagram):
            answers = server.on_datagram(action.data, CLIENT_MAPPED, now)
            for answer in answers:
                assert isinstance(answer, SendDatagram) and answer.addr == CLIENT_MAPPED
                pending += client.on_datagram(answer.data, SERVER, now)
        else:
            results.append(action)
    return results


def test_client_learns_its_mapping_from_a_serving_agent() -> None:
    client = StunAgent(random.Random(1))
    server = StunAgent(random.Random(2), AgentConfig(serve=True))
    [result] = exchange(client, server, 5.0)
    assert isinstance(result, BindingSucceeded)
    assert result.response.mapped == CLIENT_MAPPED and result.rtt == 0.0
    assert client.in_flight == 0 and server.answered == 1


def test_agent_that_does_not_serve_stays_silent() -> None:
    client = StunAgent(random.Random(1))
    silent = StunAgent(random.Random(2))
    assert exchange(client, silent, 0.0) == []
    assert silent.dropped == 1 and client.in_flight == 1
    assert client.next_deadline() == 0.5
    timeline: list[object] = []
    now = 0.0
    while (deadline := client.next_deadline()) is not None:
        now = deadline
        timeline += client.on_timer(now)
    assert [type(a) for a in timeline] == [SendDatagram] * 3 + [BindingTimedOut]
    assert now == 7.5 and client.in_flight == 0


def test_responses_are_rate_limited_per_source() -> None:
    server = StunAgent(random.Random(2), AgentConfig(serve=True, responses_per_second=10,
                                                      response_burst=5))
    request = encode_binding_request(bytes(12))
    answered = sum(len(server.on_datagram(request, ("198.51.100.9", 1), 0.0)) for _ in range(50))
    assert answered == 5 and server.refused == 45
    # Another source has its own budget; the first refills at 10/s.
    assert server.on_datagram(request, ("198.51.100.10", 1), 0.0)
    assert sum(len(server.on_datagram(request, ("198.51.100.9", 1), 1.0)) for _ in range(50)) == 5
    assert sum(len(server.on_datagram(request, ("198.51.100.9", 1), 1.25)) for _ in range(5)) == 2


def test_total_rate_caps_many_sources() -> None:
    limiter = RateLimiter(rate=10, burst=5, total_rate=100, max_keys=10_000)
    allowed = sum(limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0) for i in range(1000))
    assert allowed == 100


def test_limiter_forgets_the_least_recent_source() -> None:
    limiter = RateLimiter(rate=1, burst=1, total_rate=1000, max_keys=2)
    assert limiter.allow("a", 0.0) and not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0) and limiter.allow("c", 0.0)
    assert limiter.allow("a", 0.0)  # forgotten, so a fresh budget


def test_junk_and_unsolicited_responses_are_dropped() -> None:
    agent = StunAgent(random.Random(1), AgentConfig(serve=True))
    server = StunAgent(random.Random(2), AgentConfig(serve=True))
    [answer] = server.on_datagram(encode_binding_request(bytes(12)), CLIENT_MAPPED, 0.0)
    assert isinstance(answer, SendDatagram)
    assert agent.on_datagram(answer.data, SERVER, 0.0) == []  # nobody asked
    assert agent.on_datagram(b"\x00" * 40, SERVER, 0.0) == []
    assert agent.on_datagram(bytes(range(256)), SERVER, 0.0) == []
    assert agent.dropped == 3 and agent.answered == 0


def test_in_flight_cap() -> None:
    agent = StunAgent(random.Random(1), AgentConfig(max_transactions=2))
    agent.begin(SERVER, 0.0)
    agent.begin(("203.0.113.11", 1), 0.0)
    try:
        agent.begin(("203.0.113.12", 1), 0.0)
    except ValueError as exc:
        assert "in flight" in str(exc)
    else:
        raise AssertionError("a third transaction was accepted")


def test_ipv6_server_is_matched_in_normal_form() -> None:
    client = StunAgent(random.Random(1))
    [send] = client.begin(("2001:0db8:0000::0010", 3478), 0.0)
    assert isinstance(send, SendDatagram) and send.addr == ("2001:db8::10", 3478)
    request = decode_stun(send.data)
    server = StunAgent(random.Random(2), AgentConfig(serve=True))
    [answer] = server.on_datagram(send.data, ("2001:db8::99", 7), 0.0)
    assert isinstance(answer, SendDatagram)
    [done] = client.on_datagram(answer.data, ("2001:db8::10", 3478), 0.1)
    assert isinstance(done, BindingSucceeded) and done.response.mapped == ("2001:db8::99", 7)
    assert done.response.transaction_id == request.transaction_id
