from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.identity import PeerId
from overlay.naming import (
    InvalidName,
    normalize,
    normalize_hostname,
    parse_name,
    self_certifying_name,
    to_unicode,
)
from tests.naming.helpers import key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice.ovl", "alice.ovl"),
        ("Alice.OVL", "alice.ovl"),
        ("alice.ovl.", "alice.ovl"),
        ("shop.alice.ovl", "shop.alice.ovl"),
        ("a-1.ovl", "a-1.ovl"),
        ("Bücher.ovl", "xn--bcher-kva.ovl"),
        ("BÜCHER.ovl", "xn--bcher-kva.ovl"),
        ("xn--bcher-kva.ovl", "xn--bcher-kva.ovl"),
        # UTS-46 maps full-width letters and the ideographic full stop.
        ("ＡＬＩＣＥ。ovl", "alice.ovl"),
        # Non-transitional: ß is kept (IDNA 2008), not mapped to "ss".
        ("straße.ovl", "xn--strae-oqa.ovl"),
    ],
)
def test_normalizes_like_dns(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "empty"),
        (".", "empty"),
        ("alice..ovl", "empty-label"),
        (".alice.ovl", "empty-label"),
        ("a" * 64 + ".ovl", "label-length"),
        (".".join(["a" * 63] * 4) + ".ovl", "name-length"),
        ("x" * 2000 + ".ovl", "name-length"),
        ("al_ice.ovl", "ldh"),
        ("al ice.ovl", "ldh"),
        ("alice!.ovl", "ldh"),
        ("-alice.ovl", "hyphen"),
        ("alice-.ovl", "hyphen"),
        ("ab--cd.ovl", "reserved-hyphens"),
        ("xn--zz.ovl", "idna"),
        ("a\u200db.ovl", "idna"),
        ("alice.com", "zone"),
        ("ovl", "zone"),
        ("aliceovl", "zone"),
    ],
)
def test_each_rule_has_its_error(text: str, rule: str) -> None:
    with pytest.raises(InvalidName) as info:
        normalize(text)
    assert info.value.rule == rule
    assert rule in str(info.value)


def test_longest_legal_name_is_accepted() -> None:
    # 3 labels of 63 + 1 of 57 + ".ovl" = 63*3 + 57 + 3 dots + 4 = 253 bytes.
    name = ".".join(["a" * 63] * 3 + ["b" * 57]) + ".ovl"
    assert len(name) == 253
    assert normalize(name) == name
    with pytest.raises(InvalidName) as info:
        normalize("c." + name)
    assert info.value.rule == "name-length"


def test_zone_is_configurable() -> None:
    assert normalize("Alice.Example.Test", zone="example.test") == "alice.example.test"
    with pytest.raises(InvalidName) as info:
        normalize("alice.ovl", zone="example.test")
    assert info.value.rule == "zone"


def test_self_certifying_name_parses_to_its_peer() -> None:
    peer = PeerId.from_public_key(key(7).public_key())
    name = self_certifying_name(peer)
    assert name.startswith("k51") and name.endswith(".ovl")
    assert len(name.split(".")[0]) <= 63
    assert parse_name(name).owner_peer == peer
    # Case-insensitive like any DNS name, and sub-names belong to the same key.
    assert parse_name(name.upper()).owner_peer == peer
    assert parse_name("www." + name).owner_peer == peer
    assert parse_name("alice.ovl").owner_peer is None


def test_self_certifying_label_must_be_base36() -> None:
    peer = PeerId.from_public_key(key(7).public_key())
    # A base32 CID of a sha2-256 peer ID fits a label; it must be refused,
    # or one key would have two names.
    hashed = PeerId(bytes([0x12, 0x20]) + bytes(range(32)))
    assert len(hashed.to_cid(base="base32")) <= 63
    with pytest.raises(InvalidName) as info:
        normalize(hashed.to_cid(base="base32") + ".ovl")
    assert info.value.rule == "self-certifying-form"
    assert parse_name(hashed.to_cid(base="base36") + ".ovl").owner_peer == hashed
    assert parse_name(self_certifying_name(peer)).owner_peer == peer


def test_unicode_display_form() -> None:
    assert to_unicode("xn--bcher-kva.ovl") == "bücher.ovl"
    assert to_unicode("alice.ovl") == "alice.ovl"


def test_hostname_without_zone() -> None:
    assert normalize_hostname("Example.COM.") == "example.com"


_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.äößü"
_LABEL = st.text(
    alphabet=st.sampled_from(_CHARS),
    min_size=1,
    max_size=70,
)


@settings(deadline=None)
@given(_LABEL)
def test_normalize_is_idempotent_or_a_typed_error(text: str) -> None:
    try:
        name = normalize(text + ".ovl")
    except InvalidName as exc:
        assert exc.rule in {
            "empty",
            "empty-label",
            "label-length",
            "name-length",
            "ldh",
            "hyphen",
            "reserved-hyphens",
            "idna",
            "zone",
        }
        return
    assert normalize(name) == name
    assert name == name.lower() and name.isascii()
    assert all(1 <= len(label) <= 63 for label in name.split("."))


@settings(deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_never_escapes_the_error_tree(text: str) -> None:
    try:
        normalize(text)
    except InvalidName:
        pass


@settings(deadline=None)
@given(
    st.sampled_from("kb"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=49, max_size=62),
)
def test_long_cid_like_labels_are_names_or_typed_errors(prefix: str, body: str) -> None:
    try:
        parsed = parse_name(prefix + body + ".ovl")
    except InvalidName as exc:
        assert exc.rule == "self-certifying-form"
        return
    if parsed.owner_peer is not None:
        assert self_certifying_name(parsed.owner_peer) == parsed.name
