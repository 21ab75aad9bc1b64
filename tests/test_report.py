"""``polytask report`` and ``compare --report`` (issue 14, point 4 and 5): one self-contained
HTML file whose numbers equal the directories' JSON, opened in a real browser from disk with
the network off (Debian's chromium through its chromedriver, driven by Selenium).

Where chromium or chromedriver is missing the browser test skips with the install line,
except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from tiny_reviews import ROWS, cli, write_project

from polytask.report import collect, write_report
from polytask.report.figures import mean_cosines

PNG = b"\x89PNG\r\n\x1a\n"
INSTALL = "apt-get install -y chromium chromium-driver"


_cli = cli


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    """A two-seed comparison written with --report."""
    tmp = tmp_path_factory.mktemp("report")
    write_project(tmp, ROWS * 2, trainer={"epochs": 3, "log_every": 1})
    out = tmp / "cmp"
    result = _cli("compare", tmp / "config.yaml", "--seeds", 2, "--out", out, "--report")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return out


def _cells(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', page))


def test_compare_report_numbers_equal_its_json(compared):
    page = (compared / "report.html").read_text("utf-8")
    summary = json.loads((compared / "compare.json").read_text("utf-8"))
    cells = _cells(page)
    for side in ("stl", "mtl"):
        for task, metrics in summary[side].items():
            for metric, value in metrics.items():
                assert float(cells[f"compare.{side}.{task}.{metric}"]) == value
    assert float(cells["compare.delta_m"]) == summary["delta_m"]
    assert json.loads(cells["compare.ci95"].replace("&quot;", '"')) == summary["ci95"]
    assert int(cells["compare.cost.mtl_parameters"]) == summary["cost"]["mtl_parameters"]
    embedded = re.search(r'id="polytask-data">(.*?)</script>', page, re.S)
    assert embedded and json.loads(embedded.group(1))[0]["summary"] == summary


def test_the_report_is_self_contained_with_pngs_beside_it(compared):
    page = (compared / "report.html").read_text("utf-8")
    assert not re.search(r'(src|href)="(https?:|//)', page), "nothing fetched from a network"
    images = re.findall(
        r'src="data:image/png;base64,([^"]+)" alt="[^"]*" data-file="([^"]+)"', page
    )
    names = {name for _, name in images}
    assert {"d0_stl_vs_mtl.png", "d0_loss.png", "d0_validation.png"} <= names
    for data, name in images:
        png = base64.b64decode(data)
        assert png.startswith(PNG)
        assert (compared / "report_files" / name).read_bytes() == png  # the same figure


def test_a_run_report_lists_results_and_side_by_side(compared, tmp_path):
    run = compared / "seed0" / "mtl"
    out = tmp_path / "two.html"
    result = _cli("report", run, compared, "--out", out)
    assert result.exit_code == 0, (result.stderr, result.exception)
    page = out.read_text("utf-8")
    results = json.loads((run / "results.json").read_text("utf-8"))
    cells = _cells(page)
    for split in ("val", "test"):
        for task, metrics in results[split].items():
            for metric, value in metrics.items():
                assert float(cells[f"run.{split}.{task}.{metric}"]) == value
    assert float(cells["run.headline.0"]) == results["score"]
    assert 'id="d0"' in page and 'id="d1"' in page


def test_diagnostics_when_present_give_weights_and_conflict(compared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(compared / "seed0" / "mtl", run)
    samples = [
        {
            "step": 10,
            "weights": {"aspects": 0.7, "sentiment": 1.3},
            "cosines": {"aspects|sentiment": -0.2},
        },
        {
            "step": 20,
            "weights": {"aspects": 0.9, "sentiment": 1.1},
            "cosines": {"aspects|sentiment": 0.4},
        },
    ]
    (run / "diagnostics.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in samples) + '{"cut', "utf-8"
    )
    data = collect(run)
    assert data.curves.weights["sentiment"] == [(10, 1.3), (20, 1.1)]
    tasks, matrix = mean_cosines(data.curves)
    assert tasks == ["aspects", "sentiment"] and matrix[0][1] == pytest.approx(0.1)
    out = write_report([run], tmp_path / "diag.html")
    page = out.read_text("utf-8")
    assert 'data-file="d0_weights.png"' in page and 'data-file="d0_conflict.png"' in page
    assert 'data-file="d0_conflict_over_training.png"' in page


def test_conflict_over_training_averages_the_samples_of_each_span() -> None:
    """Rows are task pairs, columns consecutive spans of samples; a cell is the mean cosine
    of its span's samples (and NaN where the pair was not sampled)."""
    from polytask.report.collect import Curves
    from polytask.report.figures import cosines_over_training

    samples = [(s, {"a|b": c, **({"a|c": -c} if s > 20 else {})}) for s, c in
               [(10, 0.1), (20, 0.3), (30, -0.5), (40, 0.7)]]  # fmt: skip
    pairs, spans, matrix = cosines_over_training(Curves(cosines=samples), bins=2)
    assert pairs == ["a / b", "a / c"] and spans == ["10–20", "30–40"]
    assert matrix[0] == pytest.approx([0.2, 0.1])
    assert math.isnan(matrix[1][0]) and matrix[1][1] == pytest.approx(-0.1)
    _, spans, matrix = cosines_over_training(Curves(cosines=samples), bins=20)
    assert spans == ["10", "20", "30", "40"] and matrix[0] == pytest.approx([0.1, 0.3, -0.5, 0.7])


@pytest.mark.parametrize(
    "args, field",
    [
        (["report", "/nonexistent/run"], "/nonexistent/run"),
        (["report", "."], "."),
    ],
)
def test_a_directory_without_results_is_one_line(tmp_path, monkeypatch, args, field):
    monkeypatch.chdir(tmp_path)
    result = _cli(*args, "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {field}: ")
    assert not (tmp_path / "r.html").exists()


# ------------------------------------------------------------------ in a real browser
def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if webdriver is None or not chromium or not driver:
        reason = f"the browser test needs Debian's chromium and chromedriver: {INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND")  # no name resolves
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.set_network_conditions(offline=True, latency=0, throughput=0)
    return browser


def test_the_report_opens_offline_in_chromium(compared):
    browser = _browser()
    try:
        browser.get((compared / "report.html").resolve().as_uri())
        widths = browser.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
        )
        assert widths and all(w > 0 for w in widths), widths
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shown = browser.execute_script(
            "return Object.fromEntries(Array.from(document.querySelectorAll('[data-value]'))"
            ".map(e => [e.dataset.key, e.dataset.value]))"
        )
        summary = json.loads((compared / "compare.json").read_text("utf-8"))
        assert float(shown["compare.delta_m"]) == summary["delta_m"]
        for task, metrics in summary["mtl"].items():
            for metric, value in metrics.items():
                assert float(shown[f"compare.mtl.{task}.{metric}"]) == value
        text = browser.find_element("tag name", "body").text
        assert f"{summary['delta_m']:+.2f} %" in text
    finally:
        browser.quit()
