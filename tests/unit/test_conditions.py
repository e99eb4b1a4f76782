from strata.conditions import get_condition, is_ready, set_condition, status_is_current

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_a_new_condition_gets_the_current_time():
    conditions = set_condition([], "Ready", "False", "NotImplemented", "m", 3, T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "NotImplemented",
            "message": "m",
            "lastTransitionTime": T0,
            "observedGeneration": 3,
        }
    ]


def test_an_unchanged_status_keeps_its_transition_time():
    conditions = set_condition([], "Ready", "False", "A", "m", 1, T0)
    conditions = set_condition(conditions, "Ready", "False", "B", "other", 2, T1)
    ready = get_condition(conditions, "Ready")
    assert ready["lastTransitionTime"] == T0 and ready["reason"] == "B" and ready["observedGeneration"] == 2


def test_a_flipped_status_moves_the_transition_time():
    conditions = set_condition([], "Ready", "False", "A", "m", 1, T0)
    conditions = set_condition(conditions, "Ready", "True", "A", "m", 1, T1)
    assert get_condition(conditions, "Ready")["lastTransitionTime"] == T1
    assert is_ready(conditions)


def test_other_conditions_are_kept_in_a_stable_order():
    conditions = set_condition([], "Ready", "False", "A", "m", 1, T0)
    conditions = set_condition(conditions, "Degraded", "False", "A", "m", 1, T0)
    assert [c["type"] for c in conditions] == ["Degraded", "Ready"]


def test_status_is_current_only_once_the_latest_generation_is_observed():
    assert not status_is_current({"metadata": {"generation": 2}})
    assert not status_is_current({"metadata": {"generation": 2}, "status": {"observedGeneration": 1}})
    assert status_is_current({"metadata": {"generation": 2}, "status": {"observedGeneration": 2}})
