"""Transition rules, every pair of states (table-driven)."""

from __future__ import annotations

import itertools

import pytest

from celery_sqs_ddb import states

ALL = [None, "PENDING", "QUEUED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
TARGETS = ["QUEUED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]


def expected(current, new, newer):
    if current in ("SUCCESS", "FAILURE", "REVOKED"):
        return False  # the first terminal state wins; nothing follows it
    if new == "QUEUED":
        return current in (None, "PENDING", "QUEUED")  # never back to QUEUED once started
    if new == "STARTED":
        return current in (None, "PENDING", "QUEUED", "RETRY") or newer  # a claim needs a newer attempt
    return True


@pytest.mark.parametrize(("current", "new", "newer"),
                         list(itertools.product(ALL, TARGETS, [False, True])))
def test_every_pair(current, new, newer):
    assert states.allowed(current, new, newer_attempt=newer) is expected(current, new, newer)


@pytest.mark.parametrize(("state", "indexed_as"), [
    ("PROGRESS", "STARTED"), ("MY_CUSTOM", "STARTED"), ("STARTED", "STARTED"), ("SUCCESS", "SUCCESS"),
    ("QUEUED", "QUEUED"), ("RETRY", "RETRY"),
])
def test_index_state(state, indexed_as):
    assert states.index_state(state) == indexed_as


def test_running_and_terminal():
    assert states.is_running("PROGRESS") and states.is_running("STARTED")
    assert not states.is_running("RETRY") and not states.is_running(None)
    assert all(states.is_terminal(s) for s in ("SUCCESS", "FAILURE", "REVOKED"))
