"""Evaluation: Δm against single-task baselines and statistics over seeds."""

from polytask.evaluation.delta_m import delta_m
from polytask.evaluation.stats import (
    mean_std,
    paired_ci95,
    paired_delta_m_ci,
    t_interval,
    t_quantile_975,
)

__all__ = [
    "delta_m",
    "mean_std",
    "paired_ci95",
    "paired_delta_m_ci",
    "t_interval",
    "t_quantile_975",
]
