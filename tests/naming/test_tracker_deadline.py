"""A lookup cut short by its deadline: the tracker judges the window of
the closest peers, so one silent (dead) peer does not turn a definite
answer into a failure."""

from __future__ import annotations

from overlay.naming.resolve import Done, NotFound
from overlay.naming.tracker import Answer, AnswerTracker
from tests.naming.helpers import CONFIG, NOW, key, record


def _peer(index: int) -> bytes:
    return b"\x00\x24\x08\x01\x12\x20" + index.to_bytes(32, "big")


def _tracker(quorum: int = 4, k: int = 20) -> AnswerTracker:
    return AnswerTracker("alice.ovl", quorum, CONFIG, max_responders=k)


def test_nobody_holds_it_is_definite_with_one_dead_peer_still_silent() -> None:
    tracker = _tracker()
    for i in range(1, 10):
        tracker.add(Answer(_peer(i), i, pending=True), NOW)
    for i in range(2, 10):  # the closest peer (1) never answers
        tracker.add(Answer(_peer(i), i, None), NOW)
    status = tracker.finish(NOW)
    assert isinstance(status, NotFound)
    assert status.definite and status.answered == 8 and status.missing == 1


def test_too_few_answers_are_not_definite() -> None:
    tracker = _tracker(quorum=4)
    for i in range(1, 8):
        tracker.add(Answer(_peer(i), i, pending=True), NOW)
    for i in (5, 6, 7):
        tracker.add(Answer(_peer(i), i, None), NOW)
    status = tracker.finish(NOW)
    assert isinstance(status, NotFound) and not status.definite
    assert tracker.window().answered == 3 and tracker.window().missing == 4


def test_failed_peers_leave_the_window() -> None:
    tracker = _tracker(quorum=3)
    for i in range(1, 6):
        tracker.add(Answer(_peer(i), i, failed=True), NOW)
    for i in (6, 7, 8):
        tracker.add(Answer(_peer(i), i, None), NOW)
    status = tracker.finish(NOW)
    assert isinstance(status, NotFound) and status.definite
    window = tracker.window()
    assert (window.answered, window.missing, window.failed) == (3, 0, 5)


def test_silent_peers_outside_the_k_closest_do_not_count() -> None:
    tracker = _tracker(quorum=2, k=3)
    for i in (1, 2, 3):
        tracker.add(Answer(_peer(i), i, None), NOW)
    for i in (10, 11, 12, 13):
        tracker.add(Answer(_peer(i), i, pending=True), NOW)
    status = tracker.finish(NOW)
    assert isinstance(status, NotFound) and status.definite and status.missing == 0


def test_a_decision_is_final_when_the_silent_peers_cannot_change_it() -> None:
    rec = record(key(1)).to_bytes()
    tracker = _tracker()
    tracker.add(Answer(_peer(1), 1, pending=True), NOW)
    for i in range(2, 10):
        tracker.add(Answer(_peer(i), i, rec), NOW)
    status = tracker.finish(NOW)
    assert isinstance(status, Done) and status.final and status.lead == 8


def test_a_decision_is_not_final_when_the_silent_peers_could_overturn_it() -> None:
    rec = record(key(1)).to_bytes()
    tracker = _tracker()
    for i in (1, 2, 3):
        tracker.add(Answer(_peer(i), i, pending=True), NOW)
    tracker.add(Answer(_peer(4), 4, rec), NOW)
    status = tracker.finish(NOW)
    assert isinstance(status, Done) and not status.final and status.lead == 1


def test_an_answer_replaces_the_pending_mark() -> None:
    tracker = _tracker(quorum=1)
    tracker.add(Answer(_peer(1), 1, pending=True), NOW)
    tracker.add(Answer(_peer(1), 1, None), NOW)
    tracker.add(Answer(_peer(1), 1, pending=True), NOW)  # a late repeat changes nothing
    assert tracker.window().answered == 1 and tracker.window().missing == 0
    assert tracker.closest() == (_peer(1),)
