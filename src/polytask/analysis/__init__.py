"""What tasks do to each other: task affinity and task grouping (issue 14)."""

from __future__ import annotations

from .grouping import Grouping, group_score, propose_groups

__all__ = ["Grouping", "group_score", "propose_groups"]
