"""multistream-select 1.0: a pure state machine and its stream driver."""

from overlay.negotiate.driver import confirm_selection, handle_protocol, select_protocol
from overlay.negotiate.machine import (
    DEFAULT_MAX_ATTEMPTS,
    DialerNegotiation,
    ListenerNegotiation,
    Output,
    Selected,
    Send,
    TooManyAttempts,
)
from overlay.negotiate.messages import (
    LS,
    MAX_MESSAGE_SIZE,
    MULTISTREAM_PROTOCOL,
    NA,
    MessageReader,
    encode_message,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "LS",
    "MAX_MESSAGE_SIZE",
    "MULTISTREAM_PROTOCOL",
    "NA",
    "DialerNegotiation",
    "ListenerNegotiation",
    "MessageReader",
    "Output",
    "Selected",
    "Send",
    "TooManyAttempts",
    "confirm_selection",
    "encode_message",
    "handle_protocol",
    "select_protocol",
]
