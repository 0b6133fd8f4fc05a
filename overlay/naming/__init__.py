"""Decentralized names: records, validation, selection, storage policy,
resolver quorum logic, owner pins and the resource-map cache (pure), plus
small JSON persistence adapters (``overlay.naming.store``).
"""

from overlay.naming.builders import make_record, make_release, make_transfer
from overlay.naming.cache import CacheConfig, CachedName, CachedNegative, ResourceMap
from overlay.naming.config import MAX_RECORD_BYTES, NamingConfig
from overlay.naming.dht_namespace import NAMESPACE, NameNamespace
from overlay.naming.errors import (
    BadProofOfWork,
    CorruptState,
    Expired,
    ForgedSignature,
    InvalidName,
    MalformedName,
    MalformedRecord,
    NamingError,
    OwnerChanged,
    OwnerPinned,
    PowNotFound,
    RecordRejected,
    StaleSequence,
    TooLarge,
    UnsupportedVersion,
    ValidityTooLong,
    WrongOwner,
)
from overlay.naming.names import (
    DEFAULT_ZONE,
    ParsedName,
    normalize,
    normalize_hostname,
    parse_name,
    self_certifying_name,
    to_unicode,
)
from overlay.naming.pins import OwnerPins, Pin
from overlay.naming.policy import Decision, Reason, StoragePolicy, select, select_index, supersedes
from overlay.naming.pow import DEFAULT_POW_BITS, solve_pow, verify_pow
from overlay.naming.record import (
    RECORD_DOMAIN,
    RECORD_VERSION,
    NameRecord,
    PeerTarget,
    RecordKind,
    Service,
    decode_record,
    sign_record,
)
from overlay.naming.resolve import Done, NeedMore, NotFound, QuorumCollector
from overlay.naming.validate import validate

__all__ = [
    "BadProofOfWork",
    "CacheConfig",
    "CachedName",
    "CachedNegative",
    "CorruptState",
    "DEFAULT_POW_BITS",
    "DEFAULT_ZONE",
    "Decision",
    "Done",
    "Expired",
    "ForgedSignature",
    "InvalidName",
    "MAX_RECORD_BYTES",
    "MalformedName",
    "MalformedRecord",
    "NAMESPACE",
    "NameNamespace",
    "NameRecord",
    "NamingConfig",
    "NamingError",
    "NeedMore",
    "NotFound",
    "OwnerChanged",
    "OwnerPinned",
    "OwnerPins",
    "ParsedName",
    "PeerTarget",
    "Pin",
    "PowNotFound",
    "QuorumCollector",
    "RECORD_DOMAIN",
    "RECORD_VERSION",
    "Reason",
    "RecordKind",
    "RecordRejected",
    "ResourceMap",
    "Service",
    "StaleSequence",
    "StoragePolicy",
    "TooLarge",
    "UnsupportedVersion",
    "ValidityTooLong",
    "WrongOwner",
    "decode_record",
    "make_record",
    "make_release",
    "make_transfer",
    "normalize",
    "normalize_hostname",
    "parse_name",
    "select",
    "select_index",
    "self_certifying_name",
    "sign_record",
    "solve_pow",
    "supersedes",
    "to_unicode",
    "validate",
    "verify_pow",
]
