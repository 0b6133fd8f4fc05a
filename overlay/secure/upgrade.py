"""The connection upgrade of a raw byte stream (TCP, a relayed circuit):
multistream-select ``/noise``, the Noise handshake, then the muxer.

The muxer is chosen without a round trip when both Noise payloads list
stream muxers (the initiator's first choice the responder also lists, as
go-libp2p does); otherwise by multistream-select on the secured stream.
The muxer itself is made by the caller's factory from the secured stream
and whether we dialed (``YamuxSession`` fits: ``YamuxSession(s, is_client)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from overlay.errors import ConfigError, OverlayError, ProtocolNotSupported
from overlay.identity.keys import PrivateKey
from overlay.identity.peer_id import PeerId
from overlay.mux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from overlay.negotiate import handle_protocol, select_protocol
from overlay.secure.errors import HandshakeTimeout
from overlay.secure.noise import PROTOCOL_ID as NOISE_PROTOCOL_ID
from overlay.secure.stream import NoiseConfig, SecureStream, secure_inbound, secure_outbound
from overlay.wire.stream import ByteStream

__all__ = ["UpgradeConfig", "Upgraded", "MuxerFactory", "upgrade_outbound", "upgrade_inbound"]

M = TypeVar("M")

MuxerFactory = Callable[[SecureStream, bool], M]
"""``(secured stream, is_client) -> muxer``; ``is_client`` is the dialer."""


@dataclass(frozen=True, slots=True)
class UpgradeConfig:
    """How a raw stream is secured and multiplexed."""

    muxers: tuple[str, ...] = (YAMUX_PROTOCOL_ID,)
    """Muxers we speak, in preference order."""

    advertise_muxers: bool = True
    """List ``muxers`` in the Noise payload, so two peers that both do skip
    the multistream round trip for the muxer."""

    handshake_timeout: float = 10.0
    """Seconds for the Noise handshake alone."""

    timeout: float = 20.0
    """Seconds for the whole upgrade, both negotiations included."""

    noise: NoiseConfig = field(init=False)

    def __post_init__(self) -> None:
        if not self.muxers:
            raise ConfigError("at least one muxer is needed")
        if not self.timeout > 0:
            raise ConfigError("timeout must be positive")
        advertised = self.muxers if self.advertise_muxers else ()
        object.__setattr__(self, "noise", NoiseConfig(self.handshake_timeout, advertised))


@dataclass(frozen=True, slots=True)
class Upgraded(Generic[M]):
    """A secured, multiplexed connection: enter ``muxer`` to use it."""

    muxer: M
    stream: SecureStream
    muxer_protocol: str

    @property
    def remote_peer(self) -> PeerId:
        return self.stream.remote_peer


def early_muxer(secure: SecureStream, config: UpgradeConfig) -> str | None:
    """The muxer both payloads agreed on, or None to negotiate it with
    multistream (when either side listed none).  Lists without overlap fail
    the upgrade (libp2p/specs ``connections/inlined-muxer-negotiation.md``)."""
    theirs = secure.remote_extensions.stream_muxers if secure.remote_extensions else ()
    if not config.advertise_muxers or not theirs:
        return None
    initiator, responder = (config.muxers, theirs) if secure.is_initiator else (theirs, config.muxers)
    chosen = next((m for m in initiator if m in responder), None)
    if chosen is None:
        raise ProtocolNotSupported(config.muxers)
    return chosen


async def upgrade_outbound(
    raw: ByteStream,
    local_key: PrivateKey,
    expected_peer: PeerId | None,
    muxer_factory: MuxerFactory[M],
    *,
    config: UpgradeConfig | None = None,
) -> Upgraded[M]:
    """Secure and multiplex ``raw`` as the dialer.  Raises
    ``ProtocolNotSupported`` (the remote refuses Noise or our muxers),
    ``PeerIdMismatch``, ``NoiseProtocolError``/``HandshakeError``."""
    config = config or UpgradeConfig()
    try:
        async with asyncio.timeout(config.timeout):
            await select_protocol(raw, [NOISE_PROTOCOL_ID])
            secure = await secure_outbound(raw, local_key, expected_peer, config=config.noise)
            protocol = early_muxer(secure, config)
            if protocol is None:
                protocol = await select_protocol(secure, list(config.muxers))
    except TimeoutError:
        raw.reset()
        raise HandshakeTimeout(f"upgrade not complete after {config.timeout} s") from None
    except OverlayError:
        raw.reset()
        raise
    return Upgraded(muxer_factory(secure, True), secure, protocol)


async def upgrade_inbound(
    raw: ByteStream,
    local_key: PrivateKey,
    muxer_factory: MuxerFactory[M],
    *,
    config: UpgradeConfig | None = None,
) -> Upgraded[M]:
    """Secure and multiplex ``raw`` as the listener; the remote's peer ID
    is ``result.remote_peer``."""
    config = config or UpgradeConfig()
    muxers = config.muxers
    try:
        async with asyncio.timeout(config.timeout):
            await handle_protocol(raw, lambda p: p == NOISE_PROTOCOL_ID)
            secure = await secure_inbound(raw, local_key, config=config.noise)
            protocol = early_muxer(secure, config)
            if protocol is None:
                protocol = await handle_protocol(secure, lambda p: p in muxers)
    except TimeoutError:
        raw.reset()
        raise HandshakeTimeout(f"upgrade not complete after {config.timeout} s") from None
    except OverlayError:
        raw.reset()
        raise
    return Upgraded(muxer_factory(secure, False), secure, protocol)
