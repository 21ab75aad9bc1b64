"""A bounded load test of `polytask serve` on 127.0.0.1, and one multi-task model against the
single-task models served side by side.

    .venv/bin/python benchmarks/serve/load.py                 # 2,000 requests, 8 clients
    .venv/bin/python benchmarks/serve/load.py --requests 400  # quicker

It trains three small runs of examples/reviews/en_scratch_hier.yaml (one epoch each, on
the real SemEval-2014 laptops data: quality is not the point here) — the multi-task model
and one single-task model per task — serves each with `polytask serve` in its own process,
and sends the same review sentences from 8 concurrent clients:

- **MTL**: one request per sentence to the multi-task server, both tasks answered;
- **STL**: the same sentence to both single-task servers at once (a client needs both
  answers), the latency being the slower of the two.

It reports errors (must be 0), p50 / p99 latency, throughput, and each side's resident
memory (the servers' RSS after the run, summed for the two STL servers), prints a table
and writes benchmarks/results/serve_load.json. The queue (1,024 inputs) is larger than the
concurrency, so no request is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "reviews" / "en_scratch_hier.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "serve_load.json"
POLYTASK = [sys.executable, "-m", "polytask.cli"]


def _train(raw: dict[str, Any], out: Path, workdir: Path) -> None:
    config = workdir / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(raw), "utf-8")
    subprocess.run(
        [*POLYTASK, "train", str(config), "--out", str(out), "--set", "trainer.progress=false"],
        check=True,
        cwd=CONFIG.parent,
        stdout=subprocess.DEVNULL,
    )


def _single_task(raw: dict[str, Any], task: str) -> dict[str, Any]:
    one = json.loads(json.dumps(raw))
    one["name"] = f"{raw['name']}-{task}"
    one["tasks"] = {task: raw["tasks"][task]}
    for source in one["data"]["sources"].values():
        source["tasks"] = {t: f for t, f in source["tasks"].items() if t == task}
    one["model"]["taps"] = {t: d for t, d in one["model"].get("taps", {}).items() if t == task}
    one["balancing"] = {"method": "sum"}
    return one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, run: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*POLYTASK, "serve", str(run), "--port", str(self.port), "--device", "cpu"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"the server of {run} did not start")

    def stop(self) -> float:
        rss = _rss_mib(self.process.pid)
        self.process.terminate()
        self.process.wait(timeout=30)
        return rss


async def _load(
    urls: list[str], sentences: list[str], requests: int, clients: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(sentences[i % len(sentences)])

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=60) as http:
            while not queue.empty():
                text = queue.get_nowait()
                started = time.perf_counter()
                answers = await asyncio.gather(
                    *(http.post(f"{u}/predict", json={"inputs": [text]}) for u in urls)
                )
                latencies.append(time.perf_counter() - started)
                errors += sum(a.status_code != 200 for a in answers)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "errors": errors,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "requests_per_s": requests / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    raw = yaml.safe_load(CONFIG.read_text("utf-8"))
    raw["trainer"].update(epochs=1, threads=1)
    tasks = list(raw["tasks"])
    sentences = [
        "The battery life is great but the screen is too dim .",
        "I love the keyboard , the trackpad is awful .",
        "Fast boot , quiet fans and a bright display .",
        "Customer service never answered my emails .",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _train(raw, work / "mtl", work)
        for t in tasks:
            _train(_single_task(raw, t), work / f"stl-{t}", work)
        results: dict[str, Any] = {}
        for side, runs in (("mtl", [work / "mtl"]), ("stl", [work / f"stl-{t}" for t in tasks])):
            servers = [Server(r) for r in runs]
            try:
                urls = [s.url for s in servers]
                asyncio.run(_load(urls, sentences, 16, 2))  # warm up
                results[side] = asyncio.run(_load(urls, sentences, args.requests, args.clients))
            finally:
                results.setdefault(side, {})["rss_mib"] = sum(s.stop() for s in servers)
    ratios = {
        "p50": results["mtl"]["p50_ms"] / results["stl"]["p50_ms"],
        "p99": results["mtl"]["p99_ms"] / results["stl"]["p99_ms"],
        "memory": results["mtl"]["rss_mib"] / results["stl"]["rss_mib"],
    }
    print(f"{args.requests} requests from {args.clients} clients on 127.0.0.1 (en scratch hier)")
    print("| served | errors | p50 (ms) | p99 (ms) | requests/s | RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for side, label in (
        ("mtl", "one multi-task model"),
        ("stl", f"{len(tasks)} single-task models"),
    ):
        r = results[side]
        print(
            f"| {label} | {r['errors']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['requests_per_s']:.0f} | {r['rss_mib']:.0f} |"
        )
    print(
        f"MTL / STL: p50 {ratios['p50']:.2f}x, p99 {ratios['p99']:.2f}x, "
        f"memory {ratios['memory']:.2f}x"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "config": str(CONFIG.relative_to(ROOT)),
                "clients": args.clients,
                "results": results,
                "ratios": ratios,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        ),
        "utf-8",
    )


if __name__ == "__main__":
    main()
