"""NAT traversal: STUN on the QUIC socket and NAT classification.

Pure parts: ``overlay.nat.stun`` (codec and client transaction),
``overlay.nat.agent`` (one socket's STUN client and responder) and
``overlay.nat.behaviour`` (mapping and filtering classification).  The
asyncio driver is ``overlay.nat.stun_service``; docs/nat.md describes the
whole.
"""

from overlay.nat.agent import AgentConfig, StunAgent
from overlay.nat.behaviour import (
    Behaviour,
    FilteringProbe,
    MappingObservation,
    PublicAddress,
    Verdict,
    classify_filtering,
    classify_mapping,
    nat_type,
    public_addresses,
)
from overlay.nat.errors import InvalidStunServer, StunDecodeError, StunMessageTooLarge
from overlay.nat.stun import (
    BindingErrorResponse,
    BindingRequest,
    BindingResponse,
    BindingTransaction,
    RetransmitConfig,
    decode_stun,
    encode_binding_request,
    encode_binding_response,
)

__all__ = [
    "AgentConfig",
    "StunAgent",
    "Behaviour",
    "FilteringProbe",
    "MappingObservation",
    "PublicAddress",
    "Verdict",
    "classify_filtering",
    "classify_mapping",
    "nat_type",
    "public_addresses",
    "InvalidStunServer",
    "StunDecodeError",
    "StunMessageTooLarge",
    "BindingErrorResponse",
    "BindingRequest",
    "BindingResponse",
    "BindingTransaction",
    "RetransmitConfig",
    "decode_stun",
    "encode_binding_request",
    "encode_binding_response",
]
