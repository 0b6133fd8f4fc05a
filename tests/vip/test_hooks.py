"""The DNS front's A/AAAA hook, the extension's choice of addresses, and
the `tun` config key and flag."""

from __future__ import annotations

import ipaddress
import time

import pytest
from dnslib import QTYPE, DNSRecord

from overlay.daemon.config import DaemonConfig, parse_config
from overlay.daemon.run import default_extensions
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.naming.dns_front import DnsFront, DnsFrontConfig
from overlay.naming.record import NameRecord, PeerTarget
from overlay.naming.resolver import Resolution
from overlay.vip import SELF_V4, vip6_of
from overlay.vip.daemon_ext import VipExtension, target_peer
from overlay.vip.router import VipRouter
from overlay.vip.tun import TunDevice, TunError


def record(peer: PeerId | None) -> NameRecord:
    peers = () if peer is None else (PeerTarget(peer.to_bytes()),)
    return NameRecord(name="alice.ovl", owner=b"owner", sequence=1,
                      expires=int(time.time()) + 3600, ttl=60, peers=peers,
                      ips=(bytes([192, 0, 2, 7]),))


def front_for(rec: NameRecord) -> DnsFront:
    async def resolve(name: str) -> Resolution:
        return Resolution(name=name, record=rec, source="network", elapsed=0.0,
                          fresh_until=time.time() + 60)

    return DnsFront(DnsFrontConfig("127.0.0.1", 0), resolve)


async def ask(front: DnsFront, qtype: str) -> list[str]:
    reply = await front.answer(bytes(DNSRecord.question("alice.ovl", qtype).pack()), udp=True)
    assert reply is not None
    return [str(rr.rdata) for rr in DNSRecord.parse(reply).rr if rr.rtype == getattr(QTYPE, qtype)]


def new_peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())


async def test_dns_front_answers_with_the_hook_addresses() -> None:
    peer = new_peer()
    front = front_for(record(peer))
    assert await ask(front, "A") == ["192.0.2.7"]
    assert await ask(front, "AAAA") == []
    front.address_hook = lambda rec: (bytes([100, 64, 0, 9]), vip6_of(peer).packed)
    assert await ask(front, "A") == ["100.64.0.9"]
    assert await ask(front, "AAAA") == [str(vip6_of(peer))]


def test_extension_gives_the_target_peers_vips() -> None:
    me, peer = new_peer(), new_peer()
    ext = VipExtension()
    assert ext._fields(record(peer)) == {"vip4": None, "vip6": None}  # not running

    class Running:
        router = VipRouter(me)

    ext.service = Running()  # type: ignore[assignment]
    fields = ext._fields(record(peer))
    assert fields["vip6"] == str(vip6_of(peer))
    assert ipaddress.IPv4Address(fields["vip4"]) in ipaddress.IPv4Network("100.64.0.0/10")
    assert ext._fields(record(me)) == {"vip4": str(SELF_V4), "vip6": str(vip6_of(me))}
    # The same address again, and in the DNS answer too.
    assert ext._addresses(record(peer)) == (ipaddress.IPv4Address(fields["vip4"]).packed,
                                            vip6_of(peer).packed)
    # A record naming no peer keeps its own addresses.
    assert target_peer(record(None)) is None
    assert ext._addresses(record(None)) == (bytes([192, 0, 2, 7]),)


def test_tun_config_key_and_extension_list() -> None:
    assert DaemonConfig().tun is False
    assert parse_config({"tun": True}).tun is True
    with pytest.raises(ValueError):
        parse_config({"tun": "yes"})
    key = Ed25519PrivateKey.generate()
    off = default_extensions(key, DaemonConfig())
    on = default_extensions(key, DaemonConfig(tun=True))
    assert not any(isinstance(e, VipExtension) for e in off)
    assert isinstance(on[-1], VipExtension)


def test_tun_device_rejects_bad_settings() -> None:
    with pytest.raises(TunError):
        TunDevice("x" * 16, vip6_of(new_peer()))
    with pytest.raises(TunError):
        TunDevice("ovl0", vip6_of(new_peer()), mtu=1200)
