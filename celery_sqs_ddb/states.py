"""Allowed task state transitions: monotone, and the first terminal state wins.

``allowed(current, new)`` is the rule; ``backend.py`` turns it into DynamoDB condition
expressions so the rule holds across processes, not only in one.
"""

from __future__ import annotations

from celery import states

PENDING = states.PENDING
QUEUED = "QUEUED"
STARTED = states.STARTED
PROGRESS = "PROGRESS"
RETRY = states.RETRY
SUCCESS = states.SUCCESS
FAILURE = states.FAILURE
REVOKED = states.REVOKED

#: Once one of these is stored, nothing else is.
TERMINAL = frozenset({SUCCESS, FAILURE, REVOKED})
#: States that put a task in the status index under their own name.
INDEXED = (QUEUED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED)
#: Known states; any other name (PROGRESS or a user's) is a custom "running" state.
KNOWN = frozenset({PENDING, QUEUED, STARTED, RETRY, states.RECEIVED, states.REJECTED, *TERMINAL})
#: Every state a claim may start from without proof of a newer delivery.
CLAIMABLE = frozenset({PENDING, QUEUED, RETRY})
#: States a revoke from outside may replace: the task has not started (Celery's worker applies the
#: same rule in its ``revoke`` command; RECEIVED and REJECTED are states other backends store).
REVOCABLE = frozenset({PENDING, QUEUED, RETRY, states.RECEIVED, states.REJECTED})


def is_terminal(state: str | None) -> bool:
    """True for SUCCESS, FAILURE and REVOKED."""
    return state in TERMINAL


def is_running(state: str | None) -> bool:
    """True for STARTED and custom states such as PROGRESS."""
    return state is not None and (state == STARTED or state not in KNOWN)


def index_state(state: str) -> str:
    """The status under which a state appears in the status index (custom states count as STARTED)."""
    return state if state in INDEXED else STARTED


def revocable(current: str | None, running: bool) -> bool:
    """Whether a revoke from outside the running worker may write REVOKED: not started, not final."""
    return not running and (current or PENDING) in REVOCABLE


def allowed(current: str | None, new: str, newer_attempt: bool = False) -> bool:
    """Whether ``new`` may replace ``current`` (None: no item yet).

    ``newer_attempt`` is true when the writer proves a later delivery or retry than the one
    recorded (a redelivered message after a crash), which lets a claim take over a task that
    is STARTED or in a custom state.
    """
    current = current or PENDING
    if current in TERMINAL:
        return False
    if new in (PENDING, QUEUED):
        return current in (PENDING, QUEUED) and new != PENDING
    if new == STARTED:
        return current in CLAIMABLE or newer_attempt
    return True
