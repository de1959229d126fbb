"""The transition table: every legal move, and an error for every other one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioresil import CircuitState, IllegalTransitionError, Trigger
from aioresil.core.states import TRANSITIONS, next_state

S, T = CircuitState, Trigger


def test_state_values_are_the_documented_strings() -> None:
    assert [s.value for s in S] == ["closed", "open", "half_open", "forced_open", "disabled"]
    assert isinstance(S.OPEN, str)
    assert S("half_open") is S.HALF_OPEN
    assert str(S.OPEN) == "open"


@pytest.mark.parametrize(
    ("state", "trigger", "expected"),
    [
        (S.CLOSED, T.TRIP, S.OPEN),
        (S.OPEN, T.TIMEOUT_ELAPSED, S.HALF_OPEN),
        (S.HALF_OPEN, T.TRIAL_FAILED, S.OPEN),
        (S.HALF_OPEN, T.TRIALS_PASSED, S.CLOSED),
    ],
)
def test_automatic_moves(state: S, trigger: T, expected: S) -> None:
    assert next_state(state, trigger) is expected


@given(st.sampled_from(S))
def test_operator_actions_are_legal_from_every_state(state: S) -> None:
    assert next_state(state, T.RESET) is S.CLOSED
    assert next_state(state, T.FORCE_OPEN) is S.FORCED_OPEN
    assert next_state(state, T.DISABLE) is S.DISABLED


@given(st.sampled_from(S), st.sampled_from(T))
def test_a_move_is_either_in_the_table_or_raises(state: S, trigger: T) -> None:
    if (state, trigger) in TRANSITIONS:
        assert next_state(state, trigger) is TRANSITIONS[(state, trigger)]
    else:
        with pytest.raises(IllegalTransitionError, match=state.value):
            next_state(state, trigger)


def test_no_automatic_move_leaves_an_operator_state() -> None:
    automatic = {T.TRIP, T.TIMEOUT_ELAPSED, T.TRIAL_FAILED, T.TRIALS_PASSED}
    for (state, trigger), _ in TRANSITIONS.items():
        if state in (S.FORCED_OPEN, S.DISABLED):
            assert trigger not in automatic


def test_the_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(S.OPEN, T.TRIP)] = S.CLOSED  # type: ignore[index]
