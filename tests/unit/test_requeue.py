"""The periodic-pass schedule (controllers/requeue.py) and the events passes post."""

from __future__ import annotations

import threading

import pytest

from strata.controllers.requeue import Requeuer, Schedule
from strata.render.event import MESSAGE_LIMIT, event_manifest


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def schedule(clock):
    return Schedule(clock)


def due_names(schedule):
    return [entry.name for entry in schedule.take_due()]


def test_an_object_seen_is_due_an_interval_later_not_at_once(schedule, clock):
    schedule.seen("Dataset", "ns", "a", "uid-a", 60)
    assert due_names(schedule) == []
    clock.now += 59
    assert due_names(schedule) == []
    clock.now += 1
    assert due_names(schedule) == ["a"]


def test_a_pass_from_any_cause_pushes_the_next_periodic_one_back(schedule, clock):
    schedule.seen("Dataset", "ns", "a", "uid-a", 60)
    clock.now += 50
    schedule.passed("uid-a")  # an event's pass
    clock.now += 50
    assert due_names(schedule) == []
    clock.now += 10
    assert due_names(schedule) == ["a"]


def test_a_running_pass_is_not_taken_twice_and_is_due_again_after_it_passes(schedule, clock):
    schedule.seen("Dataset", "ns", "a", "uid-a", 10)
    clock.now += 10
    assert due_names(schedule) == ["a"]
    clock.now += 30
    assert due_names(schedule) == []  # still running
    schedule.passed("uid-a")
    schedule.done("uid-a")
    clock.now += 10
    assert due_names(schedule) == ["a"]


def test_a_new_interval_applies_from_the_last_pass(schedule, clock):
    schedule.seen("TrainingJob", "ns", "t", "uid-t", 60)
    clock.now += 5
    schedule.seen("TrainingJob", "ns", "t", "uid-t", 3)  # it started running: progress reads
    assert due_names(schedule) == ["t"]


def test_a_failed_pass_is_retried_sooner_but_never_later_than_its_interval(schedule, clock):
    schedule.seen("Dataset", "ns", "a", "uid-a", 60)
    schedule.seen("Dataset", "ns", "b", "uid-b", 5)
    clock.now += 60
    assert sorted(due_names(schedule)) == ["a", "b"]
    schedule.retry("uid-a", 10)
    schedule.retry("uid-b", 10)
    clock.now += 5
    assert due_names(schedule) == ["b"]
    clock.now += 5
    assert due_names(schedule) == ["a"]


def test_a_gone_object_is_never_due_and_the_longest_overdue_comes_first(schedule, clock):
    schedule.seen("Dataset", "ns", "a", "uid-a", 30)
    clock.now += 1
    schedule.seen("Dataset", "ns", "b", "uid-b", 20)
    schedule.seen("Dataset", "ns", "c", "uid-c", 10)
    schedule.gone("uid-b")
    clock.now += 60
    assert due_names(schedule) == ["c", "a"]  # due at 111 and at 130
    assert len(schedule) == 2


def test_the_requeuer_runs_due_passes_and_retries_a_failing_one():
    schedule = Schedule()
    ran: list[str] = []
    failed_once = threading.Event()
    both_ran = threading.Event()

    def run_pass(entry):
        if entry.name == "flaky" and not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("API unavailable")
        ran.append(entry.name)
        schedule.passed(entry.uid)
        if {"steady", "flaky"} <= set(ran):
            both_ran.set()

    schedule.seen("Dataset", "ns", "steady", "uid-1", 0)
    schedule.seen("Dataset", "ns", "flaky", "uid-2", 0.5)
    requeuer = Requeuer(schedule, run_pass, workers=2)
    requeuer.start()
    try:
        assert both_ran.wait(30), f"ran only {ran}"
    finally:
        requeuer.stop()
    assert failed_once.is_set()


BODY = {"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "lm", "namespace": "ml", "uid": "u-1", "resourceVersion": "42"}}


def test_an_event_names_its_object_and_the_operator_as_its_source():
    event = event_manifest(BODY, "Normal", "Created", "Created Job lm-1", "2026-11-30T08:00:00Z", "strata-7f9")
    assert event["metadata"] == {"generateName": "strata-operator-", "namespace": "ml"}
    assert event["involvedObject"] == {"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "name": "lm",
                                       "namespace": "ml", "uid": "u-1", "resourceVersion": "42"}
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Created", "Created Job lm-1")
    assert event["source"] == {"component": "strata-operator"} and event["reportingComponent"] == "strata-operator"
    assert event["reportingInstance"] == "strata-7f9"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-30T08:00:00Z"


def test_an_event_message_is_cut_to_what_the_api_server_accepts():
    event = event_manifest(BODY, "Warning", "InvalidSpec", "x" * 5000, "2026-11-30T08:00:00Z", "h")
    assert len(event["message"]) == MESSAGE_LIMIT
