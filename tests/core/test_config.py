"""BreakerConfig: defaults, custom values, and a clear error naming the field for bad input."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from aioresil import BreakerConfig
from aioresil.core.config import MAX_DURATION_US


def test_defaults() -> None:
    config = BreakerConfig()
    assert config.failure_threshold == 5
    assert config.recovery_timeout == 30.0
    assert config.half_open_max_calls == 1
    assert config.success_threshold == 2
    assert config.record_exceptions == (Exception,)
    assert config.ignore_exceptions == ()
    assert config.failure_rate_threshold is None
    assert config.window_size is None and config.window_duration is None
    assert config.on_backend_error == "fail_open"
    assert config.recording == "strict"
    assert not config.has_rate_rule and not config.timed


def test_custom_values_are_kept() -> None:
    config = BreakerConfig(
        failure_threshold=10,
        recovery_timeout=2.5,
        half_open_max_calls=4,
        success_threshold=3,
        record_exceptions=(OSError,),
        ignore_exceptions=(FileNotFoundError,),
        backoff_multiplier=2,
        max_recovery_timeout=60,
    )
    assert config.failure_threshold == 10
    assert config.recovery_timeout == 2.5
    assert config.half_open_max_calls == 4
    assert config.success_threshold == 3
    assert config.record_exceptions == (OSError,)
    assert config.ignore_exceptions == (FileNotFoundError,)


@pytest.mark.parametrize(
    "rules",
    [
        {"backoff_multiplier": 2},
        {"recovery_timeout": 30, "max_recovery_timeout": 300},
        {"failure_rate_threshold": 1, "window_duration": 60},
        {"slow_call_duration": 2, "slow_call_rate_threshold": 1},
        {"trial_lease": 5, "batch_interval": 1},
    ],
)
def test_a_float_rule_given_as_an_int_is_the_same_config(rules: dict[str, int]) -> None:
    """Redis stores the rules as text and reads them back as floats: a rule given as an int
    must be the same config (same fingerprint, same value shown) as the float it stands for,
    or a fleet with ``2`` in one process and ``2.0`` in another reports a conflict."""
    as_ints = BreakerConfig(**rules)
    as_floats = BreakerConfig(**{name: float(value) for name, value in rules.items()})
    assert as_ints.fingerprint == as_floats.fingerprint
    for name in rules:
        assert type(getattr(as_ints, name)) is float, name
    assert repr(as_ints) == repr(as_floats)


def test_the_default_config_keeps_its_fingerprint() -> None:
    """Processes of an older release compute this too: a change would be a conflict at every
    rolling upgrade."""
    assert BreakerConfig().fingerprint == "40c925833c62bc3a"


def test_config_is_frozen_and_keyword_only() -> None:
    config = BreakerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.failure_threshold = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        BreakerConfig(3)  # type: ignore[misc]


def test_a_single_exception_class_is_accepted() -> None:
    assert BreakerConfig(record_exceptions=OSError).record_exceptions == (OSError,)  # type: ignore[arg-type]


def test_rate_rule_without_window_gets_a_count_window_of_100() -> None:
    config = BreakerConfig(failure_rate_threshold=0.5)
    assert config.window_size == 100
    assert config.has_rate_rule


def test_backoff_grows_and_is_capped() -> None:
    config = BreakerConfig(recovery_timeout=1, backoff_multiplier=2, max_recovery_timeout=5)
    assert [config.recovery_timeout_for(n) for n in (1, 2, 3, 4, 50_000)] == [1, 2, 4, 5, 5]
    uncapped = BreakerConfig(recovery_timeout=1, backoff_multiplier=10)
    # the longest duration a config may give (~285 years), as breaker.lua clamps it: a stored
    # open_until must stay a number (it was math.inf here, and past 2^63 us on Redis)
    assert uncapped.recovery_timeout_for(10_000) == MAX_DURATION_US / 1e6
    assert uncapped.recovery_timeout_for(11) == MAX_DURATION_US / 1e6
    assert uncapped.recovery_timeout_for(10) == 1e9


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", -1),
        ("failure_threshold", 2.5),
        ("failure_threshold", True),
        ("failure_threshold", "5"),
        ("recovery_timeout", 0),
        ("recovery_timeout", -3),
        ("recovery_timeout", math.nan),
        ("recovery_timeout", math.inf),
        ("half_open_max_calls", 0),
        ("success_threshold", 0),
        ("minimum_calls", 0),
        ("window_size", 0),
        ("window_duration", 0),
        ("slow_call_duration", -1),
        ("backoff_multiplier", 0.5),
        ("max_recovery_timeout", 0),
        ("trial_lease", 0),
        ("batch_interval", 0),
        ("on_backend_error", "explode"),
        ("recording", "sometimes"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: value})


@pytest.mark.parametrize("value", [0, 1.5, 50, -0.1, math.nan])
def test_failure_rate_must_be_a_fraction(value: float) -> None:
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        BreakerConfig(failure_rate_threshold=value)


def test_max_recovery_timeout_below_recovery_timeout_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_recovery_timeout"):
        BreakerConfig(recovery_timeout=10, max_recovery_timeout=5)


def test_slow_call_fields_must_come_together() -> None:
    with pytest.raises(ValueError, match="slow_call_duration and slow_call_rate_threshold"):
        BreakerConfig(slow_call_duration=1.0)
    with pytest.raises(ValueError, match="slow_call_duration and slow_call_rate_threshold"):
        BreakerConfig(slow_call_rate_threshold=0.5)


def test_windows_are_exclusive() -> None:
    with pytest.raises(ValueError, match="exclusive"):
        BreakerConfig(failure_rate_threshold=0.5, window_size=10, window_duration=10)


def test_window_without_rate_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="rate rule"):
        BreakerConfig(window_size=10)


def test_minimum_calls_above_window_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerConfig(failure_rate_threshold=0.5, window_size=5, minimum_calls=6)


def test_no_rule_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="failure_threshold may be None"):
        BreakerConfig(failure_threshold=None)


@pytest.mark.parametrize("bad", [("not a class",), (int,), "Exception", [ValueError, 3]])
def test_exception_lists_must_hold_exception_classes(bad: Any) -> None:
    with pytest.raises(ValueError, match="record_exceptions"):
        BreakerConfig(record_exceptions=bad)
