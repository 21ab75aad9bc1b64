"""Shared data files for tests: located under ../shared/data (or POLYTASK_DATA), and SemEval-2014
laptop rows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polytask.data.readers import data_root
from polytask.data.semeval import parse_semeval2014

TRAIN_XML = "semeval14-laptops/Laptop_Train_v2.xml"
TEST_XML = "semeval14-laptops/Laptops_Test_Gold.xml"


def require_data(rel: str) -> Path:
    """The shared data file; skipped where absent (a user's clone), a failure under CI=true."""
    path = data_root() / rel
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing in CI")
        pytest.skip(f"{path} not available (set POLYTASK_DATA to the shared data folder)")
    return path


def laptop_rows(rel: str, n: int) -> list[dict]:
    """The first ``n`` sentences as ``{"text", "tokens", "tags", "sentiment"}``, read by
    :func:`polytask.data.parse_semeval2014`: its word tokens, its ``aspects`` tags
    (B-ASP/I-ASP), the tokens joined by one space as ``text`` (so ``text.split()`` gives
    the tokens back), and the polarity of the first positive/negative aspect term in file
    order (``None`` where there is none; only two classes, unlike the reader's
    ``sentiment`` field)."""
    sentences, _ = parse_semeval2014(require_data(rel))
    rows = []
    for s in sentences[:n]:
        polar = [a.polarity for a in s.aspects if a.polarity in ("positive", "negative")]
        rows.append(
            {
                "text": " ".join(s.tokens),
                "tokens": list(s.tokens),
                "tags": s.fields()["aspects"],
                "sentiment": polar[0] if polar else None,
            }
        )
    return rows
