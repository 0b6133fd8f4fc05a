"""Birthday punching's pure parts at fixed times: the message codec, who
plays which side, the NAT kind, port prediction, the easy side's probe
schedule (bounds, rate, order) and the hard side's sockets, READY and
winner, and both sides against simulated symmetric NATs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import DecodeError
from overlay.nat.birthday_core import (
    BirthdayConfig,
    DialFrom,
    EasyProber,
    Failed,
    HardSide,
    NotNeeded,
    OpenSockets,
    Refused,
    Role,
    SendProbes,
    SendReady,
    SprayLimiter,
    Succeeded,
    decide,
    hit_probability,
    nat_kind_from,
    predict_ranges,
)
from overlay.nat.birthday_messages import (
    MAX_MESSAGE_SIZE,
    BirthdayDecodeError,
    Hello,
    NatKind,
    Ready,
    Refuse,
    decode,
    encode,
    parse_probe,
    probe_datagram,
)

CFG = BirthdayConfig()
NONCE = b"\x01" * 8


# -- messages --------------------------------------------------------------------------


@given(st.sampled_from(list(NatKind)), st.binary(min_size=8, max_size=8),
       st.ip_addresses().map(str), st.integers(0, 65535))
def test_hello_round_trips(kind: NatKind, nonce: bytes, ip: str, port: int) -> None:
    hello = Hello(kind, nonce, ip, port)
    assert decode(encode(hello)) == hello


@given(st.lists(st.tuples(st.integers(1, 60000), st.integers(1, 100)), max_size=8))
def test_ready_round_trips(ranges: list[tuple[int, int]]) -> None:
    ready = Ready(tuple(ranges))
    assert decode(encode(ready)) == ready


def test_refuse_round_trips_and_is_capped() -> None:
    assert decode(encode(Refuse("both symmetric"))) == Refuse("both symmetric")
    assert len(encode(Refuse("x" * 5000))) <= MAX_MESSAGE_SIZE


@given(st.binary(max_size=600))
def test_decode_raises_only_decode_errors(data: bytes) -> None:
    try:
        decode(data)
    except BirthdayDecodeError as exc:
        assert isinstance(exc, DecodeError)


def test_decode_refuses_oversized_and_bad_ranges() -> None:
    with pytest.raises(BirthdayDecodeError):
        decode(b"\x03" + b"x" * MAX_MESSAGE_SIZE)
    with pytest.raises(BirthdayDecodeError):  # 9 ranges
        decode(bytes([2, 9]) + b"\x00\x01\x00\x01" * 9)
    with pytest.raises(BirthdayDecodeError):  # more than 1024 predicted ports
        decode(bytes([2, 2]) + b"\x10\x00\x02\x00" + b"\x30\x00\x02\x01")
    with pytest.raises(BirthdayDecodeError):  # port 0
        decode(bytes([2, 1]) + b"\x00\x00\x00\x01")
    with pytest.raises(BirthdayDecodeError):  # an unknown NAT kind
        decode(bytes([1, 9, 4]) + NONCE + bytes(4) + b"\x00\x01")


@given(st.binary(min_size=8, max_size=8), st.integers(0, 65535))
def test_probe_datagram_round_trips_and_is_neither_quic_nor_stun(nonce: bytes, port: int) -> None:
    data = probe_datagram(nonce, port)
    assert parse_probe(data) == (nonce, port)
    assert data[0] & 0x40 == 0 and data[0] & 0xC0 != 0
    assert parse_probe(data[:-1]) is None and parse_probe(b"\x00" + data[1:]) is None


# -- roles and kinds ----------------------------------------------------------------------


def test_roles_agree_from_both_sides() -> None:
    for ours in NatKind:
        for theirs in NatKind:
            mine, peer = decide(ours, theirs), decide(theirs, ours)
            if isinstance(mine, Role):
                assert isinstance(peer, Role) and {mine, peer} == {Role.HARD, Role.EASY}
            else:
                assert type(mine) is type(peer)
    assert decide(NatKind.SYMMETRIC, NatKind.CONE) is Role.HARD
    assert decide(NatKind.CONE, NatKind.SYMMETRIC) is Role.EASY
    assert decide(NatKind.UNKNOWN, NatKind.SYMMETRIC) is Role.EASY
    both = decide(NatKind.SYMMETRIC, NatKind.SYMMETRIC)
    assert isinstance(both, Refused) and "both sides are behind symmetric NATs" in both.reason
    assert isinstance(decide(NatKind.CONE, NatKind.CONE), NotNeeded)


def test_nat_kind_from_stun_then_observations() -> None:
    assert nat_kind_from("endpoint-dependent", []) is NatKind.SYMMETRIC
    assert nat_kind_from("address-and-port-dependent", []) is NatKind.SYMMETRIC
    assert nat_kind_from("endpoint-independent", [("203.0.113.1", 1), ("203.0.113.1", 2)]) \
        is NatKind.CONE
    assert nat_kind_from("no-nat", []) is NatKind.PUBLIC
    assert nat_kind_from("unknown", [("203.0.113.1", 4001), ("203.0.113.1", 5002)]) \
        is NatKind.SYMMETRIC
    assert nat_kind_from(None, [("203.0.113.1", 4001), ("203.0.113.1", 4001)]) is NatKind.CONE
    assert nat_kind_from(None, [("203.0.113.1", 4001)]) is NatKind.UNKNOWN


# -- prediction ---------------------------------------------------------------------------------


def test_predict_ranges_kept_ports_then_counting_up() -> None:
    local = list(range(30000, 30256))
    ranges = predict_ranges(local, [20010, 20003], 256, CFG)
    assert ranges[0] == (30000, 256)
    assert ranges[1] == (20011, 256 + CFG.predict_slack)
    assert sum(count for _, count in ranges) <= 1024
    Ready(ranges)  # valid on the wire
    # A NAT known not to keep ports: the counting-up range comes first.
    moved = predict_ranges(local, [20010, 20003], 256, CFG, keeps_ports=False)
    assert moved[0] == (20011, 256 + CFG.predict_slack) and moved[1] == (30000, 256)


@given(st.lists(st.integers(1024, 65535), max_size=256),
       st.lists(st.integers(1024, 65535), max_size=8), st.sampled_from([None, True, False]))
def test_predict_ranges_always_fit_a_ready(local: list[int], observed: list[int],
                                           keeps: bool | None) -> None:
    Ready(predict_ranges(local, observed, len(local), CFG, keeps_ports=keeps))


def test_hit_probability_matches_the_issue() -> None:
    assert 0.98 <= hit_probability(256, 1024) < 0.99
    assert hit_probability(256, 2048) >= 0.999


# -- the easy side -------------------------------------------------------------------------------


def run_easy(prober: EasyProber, times: list[float]) -> list[tuple[float, int]]:
    sent: list[tuple[float, int]] = []
    for now in times:
        for action in prober.on_timer(now):
            if isinstance(action, SendProbes):
                sent.extend((now, port) for port in action.ports)
    return sent


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=200), st.integers(0, 2**32))
def test_easy_probes_stay_within_rate_and_bounds(gaps: list[float], seed: int) -> None:
    prober = EasyProber(CFG, "203.0.113.2", [(20000, 300)], random.Random(seed), 100.0)
    times, now = [], 100.0
    for gap in gaps:
        now += gap
        times.append(now)
    sent = run_easy(prober, times)
    ports = [port for _, port in sent]
    assert len(ports) == len(set(ports)) <= CFG.max_probes
    assert all(1024 <= port <= 65535 for port in ports)
    for index, (at, _) in enumerate(sent):
        assert index + 1 <= CFG.burst + CFG.probe_rate * (at - 100.0) + 1e-9
    assert ports == list(prober.ports[:len(ports)])


def test_easy_sends_predicted_ports_first_then_distinct_random_ones() -> None:
    prober = EasyProber(CFG, "203.0.113.2", [(30000, 256), (20011, 512)], random.Random(7), 0.0)
    ports = prober.ports
    assert len(ports) == CFG.max_probes == len(set(ports))
    assert list(ports[:256]) == list(range(30000, 30256))
    assert list(ports[256:768]) == list(range(20011, 20523))
    same = EasyProber(CFG, "203.0.113.2", [(30000, 256), (20011, 512)], random.Random(7), 0.0)
    assert same.ports == ports  # the injected rng decides


def test_easy_gives_up_after_the_last_probe_and_the_grace() -> None:
    cfg = BirthdayConfig(max_probes=2048, probe_rate=500.0, burst=0, grace=3.0)
    prober = EasyProber(cfg, "203.0.113.2", [], random.Random(1), 0.0)
    now = 0.0
    total = 0
    while prober.outcome is None and now < 60:
        deadline = prober.next_deadline()
        assert deadline is not None
        now = deadline
        for action in prober.on_timer(now):
            if isinstance(action, SendProbes):
                total += len(action.ports)
    assert total == 2048
    assert isinstance(prober.outcome, Failed) and "after 2048 probes" in prober.outcome.reason
    assert 2048 / 500 + 3.0 <= now < 2048 / 500 + 3.0 + 0.1


def test_easy_stops_on_the_direct_connection() -> None:
    prober = EasyProber(CFG, "203.0.113.2", [], random.Random(1), 0.0)
    prober.on_timer(0.0)
    assert prober.on_direct(0.5, 31000) == [Succeeded(CFG.burst, 31000)]
    assert prober.next_deadline() is None and prober.on_timer(1.0) == []


# -- the hard side --------------------------------------------------------------------------------


def open_all(hard: HardSide, now: float = 0.0) -> tuple[list[int], float]:
    """Drive the hard side until READY, opening sockets at consecutive ports."""
    opened: list[int] = []
    while True:
        deadline = hard.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        for action in hard.on_timer(now):
            if isinstance(action, OpenSockets):
                assert action.to == ("203.0.113.1", 4001)
                ports = list(range(action.first_port, action.first_port + action.count))
                opened += ports
                hard.on_sockets(ports)
            elif isinstance(action, SendReady):
                return opened, now


def test_hard_opens_its_sockets_at_the_rate_then_sends_ready() -> None:
    hard = HardSide(CFG, ("203.0.113.1", 4001), [20005], random.Random(3), 0.0)
    opened, ready_at = open_all(hard)
    assert len(opened) == 256 == len(set(opened))
    opening = (256 - CFG.burst) / CFG.socket_rate
    assert opening <= ready_at <= opening + 0.05
    ready = hard.ready()
    assert ready.ranges[0] == (hard.first_port, 256)
    assert ready.ranges[1][0] == 20006


def test_hard_dials_from_the_socket_a_valid_probe_reached() -> None:
    hard = HardSide(CFG, ("203.0.113.1", 4001), [], random.Random(3), 0.0)
    opened, now = open_all(hard)
    # Not the peer's IP, a wrong nonce, a port we do not hold: ignored.
    assert hard.on_probe(opened[5], ("198.51.100.9", 4001), True, now) == []
    assert hard.on_probe(opened[5], ("203.0.113.1", 4001), False, now) == []
    assert hard.on_probe(1, ("203.0.113.1", 4001), True, now) == []
    assert hard.ignored == 3
    actions = hard.on_probe(opened[5], ("203.0.113.1", 4001), True, now + 1)
    assert actions == [DialFrom(opened[5], ("203.0.113.1", 4001), CFG.dial_timeout)]
    assert hard.on_probe(opened[6], ("203.0.113.1", 4001), True, now + 1) == []  # one at a time
    assert hard.on_dial_result(True, now + 1.2, 31000) == [Succeeded(256, 31000)]


def test_hard_retries_another_winner_then_gives_up() -> None:
    hard = HardSide(CFG, ("203.0.113.1", 4001), [], random.Random(3), 0.0)
    opened, now = open_all(hard)
    assert hard.on_probe(opened[0], ("203.0.113.1", 4001), True, now)
    assert hard.on_dial_result(False, now + 1) == []
    assert hard.on_probe(opened[1], ("203.0.113.1", 4001), True, now + 2)
    result = hard.on_dial_result(False, now + 3)
    assert isinstance(result[0], Failed) and "winning socket" in result[0].reason


def test_hard_times_out_after_the_whole_spray() -> None:
    hard = HardSide(CFG, ("203.0.113.1", 4001), [], random.Random(3), 0.0)
    _, ready_at = open_all(hard)
    deadline = hard.next_deadline()
    assert deadline is not None
    assert deadline == pytest.approx(ready_at + CFG.hard_wait + CFG.ready_slack)
    assert hard.on_timer(deadline - 0.01) == []
    result = hard.on_timer(deadline)
    assert isinstance(result[0], Failed) and "no probe reached" in result[0].reason


def test_limiter_bounds_sessions_per_peer_and_sprays_per_ip() -> None:
    limiter = SprayLimiter(CFG)
    assert limiter.allow_session("p", 0) and limiter.allow_session("p", 1)
    assert not limiter.allow_session("p", 2)
    assert limiter.allow_spray("203.0.113.9", 0) and limiter.allow_spray("203.0.113.9", 0)
    # A third peer ID asking for the same IP gets nothing until the window refills.
    assert not limiter.allow_spray("203.0.113.9", 1)
    assert limiter.allow_spray("203.0.113.9", 1 + CFG.session_window / CFG.sprays_per_ip)


# -- both sides against simulated NATs ------------------------------------------------------------


def punch(seed: int, allocation: str) -> tuple[bool, int]:
    """One attempt against a simulated symmetric NAT allocating ``random``,
    ``sequential`` (counting up from the last observed port plus a few
    flows of other hosts) or ``preserving`` ports; (won, probes used)."""
    rng = random.Random(seed)
    nat_rng = random.Random(seed + 1_000_000)
    hard = HardSide(CFG, ("203.0.113.1", 4001), [21000], rng, 0.0)
    opened, now = open_all(hard)
    if allocation == "random":
        public = nat_rng.sample(range(1024, 65536), len(opened))
    elif allocation == "sequential":
        start = 21001 + nat_rng.randint(0, 40)
        public = list(range(start, start + len(opened)))
    else:
        public = list(opened)
    mapped = dict(zip(public, opened))
    easy = EasyProber(CFG, "203.0.113.2", hard.ready().ranges, rng, now)
    while easy.outcome is None:
        deadline = easy.next_deadline()
        assert deadline is not None
        now = deadline
        for action in easy.on_timer(now):
            if not isinstance(action, SendProbes):
                continue
            for port in action.ports:
                local = mapped.get(port)
                if local is None:
                    continue
                dials = hard.on_probe(local, ("203.0.113.1", 4001), True, now)
                if dials:
                    hard.on_dial_result(True, now, port)
                    easy.on_direct(now, port)
                    return True, easy.sent
    return False, easy.sent


def test_random_ports_are_found_by_the_spray_in_most_attempts() -> None:
    results = [punch(seed, "random") for seed in range(300)]
    wins = sum(ok for ok, _ in results)
    assert wins >= 0.97 * len(results), wins
    assert max(sent for _, sent in results) <= CFG.max_probes


@pytest.mark.parametrize("allocation", ["sequential", "preserving"])
def test_predictable_ports_are_hit_by_the_predicted_probes(allocation: str) -> None:
    for seed in range(50):
        ok, sent = punch(seed, allocation)
        # Found inside the predicted ranges, long before the random spray.
        assert ok and sent <= 256 + 256 + CFG.predict_slack + CFG.burst, (seed, sent)
