"""What a bootstrap achieved, in words an operator can act on (pure)."""

from __future__ import annotations

import logging
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from overlay.identity import PeerId
from overlay.kad.keyspace import Contact
from overlay.kad.policy import describe_failure
from overlay.multiaddrs import parse_quic_multiaddr

__all__ = ["BootstrapReport", "bootstrap_contacts", "bootstrap_report", "bootstrap_retry_delay"]


def bootstrap_retry_delay(failures: int, ceiling: float, rng: random.Random) -> float:
    """Seconds before bootstrapping again after ``failures`` attempts in a
    row left the table empty: 1, 2, 4 … up to ``ceiling``, each spread
    over its upper half so nodes that lost the same introducer do not
    come back in step."""
    base = min(ceiling, 2.0 ** max(0, min(failures - 1, 16)))
    return base * (0.5 + 0.5 * rng.random())


def bootstrap_contacts(addrs: Sequence[str], local: PeerId) -> list[Contact]:
    """Contacts of the configured bootstrap multiaddrs (ourselves excluded)."""
    contacts: list[Contact] = []
    for text in addrs:
        parsed = parse_quic_multiaddr(text)
        if parsed.peer_id is None or parsed.peer_id == local:
            continue
        raw = parsed.with_peer_id(None).to_multiaddr().to_bytes()
        contacts.append(Contact.of(parsed.peer_id, (raw,)))
    return contacts


@dataclass(frozen=True, slots=True)
class BootstrapReport:
    configured: int
    """Bootstrap peers configured (other than ourselves)."""
    reached: tuple[PeerId, ...]
    """Bootstrap peers that answered."""
    problems: tuple[tuple[PeerId, str], ...]
    """Bootstrap peers that did not answer, with why."""
    table_size: int
    """Routing-table entries after the bootstrap lookup."""
    seconds: float

    @property
    def ok(self) -> bool:
        return self.table_size > 0

    def summary(self) -> str:
        line = (
            f"kad bootstrap: reached {len(self.reached)} of {self.configured} bootstrap peer(s), "
            f"routing table has {self.table_size} peer(s) ({self.seconds:.2f} s)"
        )
        if not self.ok:
            if not self.configured:
                return line + "; no bootstrap peer is configured"
            why = "; ".join(f"{peer}: {reason}" for peer, reason in self.problems)
            return line + f"; none usable: {why}"
        return line

    def warnings(self) -> list[str]:
        return [f"kad bootstrap peer {peer} {reason}" for peer, reason in self.problems]

    def log(self, logger: logging.Logger, *, loud: bool) -> None:
        """One INFO line; each unusable bootstrap peer (and a bootstrap
        that reached nobody) as a WARNING if ``loud``, else INFO."""
        problem = logging.WARNING if loud else logging.INFO
        for line in self.warnings():
            logger.log(problem, "%s", line)
        logger.log(logging.INFO if self.ok else problem, "%s", self.summary())


def bootstrap_report(
    contacts: Sequence[Contact],
    outcomes: Mapping[PeerId, BaseException | None],
    queried: Collection[PeerId],
    table_size: int,
    protocol: str,
    seconds: float,
) -> BootstrapReport:
    """``outcomes`` maps each peer the lookup asked to None (answered) or
    the exception its request failed with; ``queried`` are the peers it
    asked (one never asked is neither reached nor a problem)."""
    reached: list[PeerId] = []
    problems: list[tuple[PeerId, str]] = []
    for contact in contacts:
        peer = contact.peer_id
        if peer not in outcomes:
            if peer in queried:
                problems.append((peer, "unreachable: no answer before the lookup ended"))
            continue
        error = outcomes[peer]
        if error is None:
            reached.append(peer)
        else:
            problems.append((peer, describe_failure(error, protocol)))
    return BootstrapReport(len(contacts), tuple(reached), tuple(problems), table_size, seconds)
