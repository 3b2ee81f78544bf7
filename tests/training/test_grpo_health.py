"""GRPO's first-steps check and the fitted completion length, on TRL's real logged metric names."""

from __future__ import annotations

import pytest

from qmd_finetune.training.config import ConfigError, GRPORunConfig, load_config
from qmd_finetune.training.grpo import HealthCheck, fitted_completion_length


def _log(zero_std: float, clipped: float) -> dict[str, float]:
    return {
        "reward": 0.5,
        "reward_std": 0.0,
        "frac_reward_zero_std": zero_std,
        "completions/clipped_ratio": clipped,
    }


def test_all_groups_with_equal_rewards_stop_the_run_after_the_check_steps() -> None:
    check = HealthCheck(steps=3, max_clipped_ratio=0.5, max_completion_length=160)
    assert not check.observe(1, _log(1.0, 0.0))
    assert not check.observe(2, _log(1.0, 0.0))
    assert check.observe(3, _log(1.0, 0.0))
    assert check.failure and "reward_std 0" in check.failure and "after 3 steps" in check.failure


def test_one_group_with_spread_passes_the_check_and_later_steps_are_not_judged() -> None:
    check = HealthCheck(steps=2, max_clipped_ratio=0.5, max_completion_length=160)
    assert not check.observe(1, _log(1.0, 0.0))
    assert not check.observe(2, _log(0.5, 0.0))
    assert not check.observe(3, _log(1.0, 1.0))
    assert check.failure is None


def test_mostly_clipped_completions_stop_the_run_naming_the_length() -> None:
    # mean clipped ratio over the window: (0.75 + 0.5) / 2 = 0.625 > 0.5
    check = HealthCheck(steps=2, max_clipped_ratio=0.5, max_completion_length=96)
    assert not check.observe(1, _log(0.0, 0.75))
    assert check.observe(2, _log(0.0, 0.5))
    assert "62% of completions were cut at max_completion_length=96" in (check.failure or "")


def test_check_steps_zero_turns_the_check_off() -> None:
    check = HealthCheck(steps=0, max_clipped_ratio=0.5, max_completion_length=96)
    assert not check.observe(5, _log(1.0, 1.0))


def test_fitted_length_is_the_99th_percentile_plus_a_quarter_rounded_to_eight() -> None:
    # 100 targets of 1..100 tokens: p99 is 99; 99 * 1.25 = 123.75 -> 128
    assert fitted_completion_length(list(range(1, 101))) == 128
    # one target of 60 tokens: 75 -> 80
    assert fitted_completion_length([60]) == 80
    with pytest.raises(ValueError, match="no training targets"):
        fitted_completion_length([])


def test_grpo_config_defaults_fit_the_length_and_validate_the_check() -> None:
    config = load_config(GRPORunConfig, None, {})
    assert config.max_completion_length is None and config.health_check_steps == 3
    with pytest.raises(ConfigError, match="max_clipped_ratio"):
        load_config(GRPORunConfig, None, {"max_clipped_ratio": "1.5"})
    with pytest.raises(ConfigError, match="health_check_steps"):
        load_config(GRPORunConfig, None, {"health_check_steps": "-1"})
