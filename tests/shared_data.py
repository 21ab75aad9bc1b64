"""Shared data files for tests: located under ../shared/data (or POLYTASK_DATA), and SemEval-2014 laptop rows."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from polytask.data.readers import data_root

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
    """The first ``n`` sentences as ``{"text", "tokens", "tags", "sentiment"}``: whitespace
    tokens, aspect terms as B-ASP/I-ASP, and the polarity of the first positive/negative
    aspect term (``None`` where there is none)."""
    rows = []
    for s in ET.parse(require_data(rel)).getroot().iter("sentence"):
        text = s.findtext("text")
        terms = [(int(a.get("from")), int(a.get("to")), a.get("polarity")) for a in s.iter("aspectTerm")]
        tokens, tags = [], []
        for m in re.finditer(r"\S+", text):
            tag = "O"
            for start, end, _ in terms:
                if m.start() < end and m.end() > start:
                    tag = "B-ASP" if m.start() <= start else "I-ASP"
            tokens.append(m.group())
            tags.append(tag)
        polar = [p for *_, p in terms if p in ("positive", "negative")]
        rows.append({"text": text, "tokens": tokens, "tags": tags, "sentiment": polar[0] if polar else None})
        if len(rows) == n:
            break
    return rows
