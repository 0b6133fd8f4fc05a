"""Fixtures of the naming tests (helpers live in helpers.py)."""

from __future__ import annotations

import pytest

from overlay.identity import Ed25519PrivateKey
from tests.naming.helpers import key


@pytest.fixture
def alice() -> Ed25519PrivateKey:
    return key(1)


@pytest.fixture
def mallory() -> Ed25519PrivateKey:
    return key(666)


@pytest.fixture
def bob() -> Ed25519PrivateKey:
    return key(2)

