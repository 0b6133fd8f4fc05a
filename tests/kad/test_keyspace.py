import random

import pytest

from overlay.kad.keyspace import (
    Contact,
    bucket_index,
    fake_peer_id,
    kad_key,
    peer_key,
    random_key_in_bucket,
    random_peer_id_in_bucket,
)
from tests.kad.helpers import ip4


def test_keys_are_sha256_of_the_multihash() -> None:
    assert kad_key(b"") == 0xE3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855
    peer = fake_peer_id(random.Random(1))
    assert peer_key(peer) == kad_key(peer.multihash)
    assert peer.multihash[:2] == b"\x12\x20" and len(peer.multihash) == 34


def test_bucket_index_is_the_highest_differing_bit() -> None:
    assert bucket_index(0, 1) == 0
    assert bucket_index(0, 1 << 255) == 255
    assert bucket_index(0b1010, 0b1000) == 1
    assert bucket_index(5, 5) == -1


def test_random_keys_and_peer_ids_land_in_the_requested_bucket() -> None:
    rng = random.Random(3)
    local = rng.getrandbits(256)
    for index in (0, 1, 100, 255):
        for _ in range(20):
            assert bucket_index(local, random_key_in_bucket(local, index, rng)) == index
    for index in (255, 248, 245):
        assert bucket_index(local, peer_key(random_peer_id_in_bucket(local, index, rng))) == index
    with pytest.raises(ValueError):
        random_key_in_bucket(local, 256, rng)
    with pytest.raises(ValueError):
        random_peer_id_in_bucket(local, 0, rng, max_tries=10)


def test_contact_derives_key_and_ip_groups() -> None:
    peer = fake_peer_id(random.Random(4))
    contact = Contact.of(peer, (ip4(8, 8, 8, 8), ip4(192, 168, 0, 1)))
    assert contact.key == peer_key(peer)
    assert contact.ip_groups == (b"4\x08\x08\x08",)
