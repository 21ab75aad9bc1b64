"""``polytask export RUN_DIR --format onnx`` (issue 15, point 7): one ONNX graph of the shared
encoder and every head, checked by onnxruntime against PyTorch (max abs diff <= 1e-4) for
each built-in encoder, with dynamic batch and sequence axes and the CRF's scores as outputs.

Models are tiny and built from configs without data (``load_data=False``); the transformer
is a random two-layer BERT written to a temporary folder (nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.build import Experiment
from polytask.config.load import validate
from polytask.data.vocab import Vocab
from polytask.tasks.linear_chain import viterbi_decode

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from polytask.export import TOLERANCE, ExportError, export_onnx, sample_batches  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TAGS = ["O", "B-ASP", "I-ASP"]
WORDS = ["the", "food", "was", "good", "bad", "service", "great", "!", ",", "x"]
SEQUENCE_TASKS = {
    "aspects": {"kind": "tagging", "labels": TAGS, "crf": True},
    "sentiment": {"kind": "classification", "labels": ["neg", "pos"]},
}
VECTOR_TASKS = {
    "income": {"kind": "classification", "labels": ["low", "mid", "high"]},
    "age": {"kind": "regression"},
    "tags": {"kind": "multilabel", "labels": ["a", "b", "c"]},
}


def _experiment(tmp: Path, encoder: dict[str, Any], tasks: dict[str, Any]) -> Experiment:
    """A config's experiment without data: the model is built, nothing is read."""
    raw = {
        "name": "export",
        "seed": 0,
        "tasks": tasks,
        "data": {
            "sources": {
                "s": {"format": "jsonl", "train": "train.jsonl", "tasks": {t: t for t in tasks}}
            }
        },
        "model": {"encoder": encoder},
    }
    chars = Vocab.build_chars([WORDS]).to_json() if encoder["type"] == "bilstm" else None
    vocab = {"tokens": Vocab(WORDS).to_json(), "chars": chars}
    labels = {t: spec["labels"] for t, spec in tasks.items() if "labels" in spec}
    return Experiment(validate(raw), tmp, vocab=vocab, labels=labels, load_data=False)


def _tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT (hidden 8) and its WordPiece tokenizer, saved as safetensors."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "##ing"]
    vocab += list("abcdefghijklmnopqrstuvwxyz")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


ENCODERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "mlp": ({"type": "mlp", "input_dim": 6, "hidden": [8, 8]}, VECTOR_TASKS),
    "tabular": (
        {"type": "tabular", "numeric": 3, "cardinalities": [4, 7], "hidden": [8]},
        VECTOR_TASKS,
    ),
    "lenet": (
        {"type": "lenet", "image_size": 14, "channels": [3, 4], "kernel_size": 3, "hidden": 8},
        VECTOR_TASKS,
    ),
    "cnn": ({"type": "cnn", "embed_dim": 8, "channels": [8, 8]}, SEQUENCE_TASKS),
    "bilstm": (
        {"type": "bilstm", "embed_dim": 8, "hidden": 6, "layers": 2, "char_dim": 4},
        SEQUENCE_TASKS,
    ),
    "transformer": ({"type": "transformer", "max_length": 16}, SEQUENCE_TASKS),
}


def _build(tmp: Path, name: str) -> tuple[Experiment, Any]:
    encoder, tasks = ENCODERS[name]
    encoder = dict(encoder)
    if name == "transformer":
        encoder["path"] = str(_tiny_bert(tmp / "bert"))
    experiment = _experiment(tmp, encoder, tasks)
    return experiment, experiment.build_model().eval()


def _session(path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------ every encoder


@pytest.mark.parametrize("name", list(ENCODERS))
def test_each_encoder_exports_with_parity(name: str, tmp_path: Path) -> None:
    experiment, model = _build(tmp_path, name)
    batches = sample_batches(experiment, model)  # batches of 2 (traced), 5 and 1
    if name == "bilstm":
        assert "chars" in batches[0]  # the character BiLSTM is part of the graph
    done = export_onnx(model, batches, tmp_path / "m.onnx", input_kind=experiment.input_kind)
    print(f"{name}: {done.exporter} max abs diff {done.max_abs_diff:.2e}")
    assert done.exporter == "dynamo" and done.fallback is None
    assert done.max_abs_diff <= TOLERANCE and done.checked == [2, 5, 1]
    expected = [t for t in model.task_names]
    if name in ("cnn", "bilstm", "transformer"):
        i = expected.index("aspects")
        expected[i + 1 : i + 1] = ["aspects.transitions", "aspects.start", "aspects.end"]
    assert done.outputs == expected
    session = _session(done.path)
    assert [o.name for o in session.get_outputs()] == expected
    assert [i.name for i in session.get_inputs()] == done.inputs
    shapes = {o.name: o.shape for o in [*session.get_inputs(), *session.get_outputs()]}
    assert all(shapes[n][0] == "batch" for n in done.inputs)
    if "aspects" in shapes:  # dynamic batch and sequence axes, the CRF's scores static
        assert shapes["aspects"][:2] == ["batch", "words" if name == "transformer" else "tokens"]
        assert shapes["aspects.transitions"] == [len(TAGS), len(TAGS)]
    meta = {p.key: p.value for p in onnx.load(str(done.path)).metadata_props}
    assert meta["polytask.input_kind"] == experiment.input_kind
    assert json.loads(meta["polytask.outputs"])["aspects" if "aspects" in expected else "age"]


def test_dynamic_batch_and_length(tmp_path: Path) -> None:
    """Traced on a batch of 2, the graph runs a batch of 5 of other lengths."""
    experiment, model = _build(tmp_path, "cnn")
    two, five = sample_batches(experiment, model, sizes=(2, 5), seed=3)
    assert two["tokens"].shape[0] == 2 and five["tokens"].shape[0] == 5
    done = export_onnx(model, [two], tmp_path / "m.onnx", input_kind="tokens")
    assert done.checked == [2]
    longer = five["tokens"].shape[1] + 4
    tokens = torch.zeros(5, longer, dtype=torch.long)
    tokens[:, : five["tokens"].shape[1]] = five["tokens"]
    tokens[0, :longer] = 3  # one row longer than any the graph was traced on
    got = _session(done.path).run(None, {"tokens": tokens.numpy()})
    with torch.no_grad():
        out = model({"tokens": tokens}).outputs
    assert got[0].shape == (5, longer, len(TAGS))
    assert abs(got[0] - out["aspects"].emissions.numpy()).max() <= TOLERANCE
    assert abs(got[-1] - out["sentiment"].numpy()).max() <= TOLERANCE


# ------------------------------------------------------------------- the command, a run


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export_run")
    rng = random.Random(0)
    rows = []
    for _ in range(24):
        tokens = [rng.choice(WORDS) for _ in range(rng.randint(2, 7))]
        rows.append(
            {
                "tokens": tokens,
                "tags": ["B-ASP" if t == "food" else "O" for t in tokens],
                "sentiment": "pos" if "good" in tokens else "neg",
            }
        )
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    cfg = {
        "name": "export",
        "seed": 1,
        "tasks": SEQUENCE_TASKS,
        "data": {
            "sources": {
                "s": {
                    "format": "jsonl",
                    "train": "train.jsonl",
                    "tasks": {"aspects": "tags", "sentiment": "sentiment"},
                }
            }
        },
        "model": {"encoder": {"type": "cnn", "embed_dim": 8, "channels": [8]}},
        "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.01, "threads": 1, "progress": False},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(tmp / "config.yaml"), "--out", str(tmp / "run")])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return tmp / "run"


def test_command_exports_and_reports_parity(cnn_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn.onnx"
    result = CliRunner().invoke(app, ["export", str(cnn_run), "--out", str(out), "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    summary = json.loads(result.stdout)
    assert summary["exporter"] == "dynamo" and summary["max_abs_diff"] <= TOLERANCE
    assert summary["outputs"] == [
        "aspects",
        "aspects.transitions",
        "aspects.start",
        "aspects.end",
        "sentiment",
    ]
    # the CRF's scores are outputs; Viterbi outside the graph decodes as PyTorch does
    import polytask

    run = polytask.load(cnn_run, device="cpu")
    batch = run.collate(run.to_examples([["the", "food", "was", "good"], ["bad", "service"]]))
    tokens = batch.inputs["tokens"]
    emissions, transitions, start, end, sentiment = _session(out).run(
        None, {"tokens": tokens.numpy()}
    )
    with torch.no_grad():
        scores = run.model(batch.inputs).outputs["aspects"]
    assert abs(transitions - scores.transitions.numpy()).max() == 0.0
    assert transitions[TAGS.index("O"), TAGS.index("I-ASP")] <= -1e3  # IOB2 constraint kept
    mask = tokens != 0
    ours = viterbi_decode(
        torch.from_numpy(emissions),
        mask,
        torch.from_numpy(transitions),
        torch.from_numpy(start),
        torch.from_numpy(end),
    )
    theirs = viterbi_decode(scores.emissions, mask, scores.transitions, scores.start, scores.end)
    assert ours == theirs and [len(p) for p in ours] == [4, 2]
    plain = CliRunner().invoke(app, ["export", str(cnn_run)])
    assert plain.exit_code == 0 and (cnn_run / "model.onnx").is_file()
    assert "max abs diff" in plain.stdout and len(plain.stdout.strip().splitlines()) == 1


def test_missing_run_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "not a polytask run directory" in lines[0]


def test_unknown_format_and_exporter_failure_are_one_line(
    cnn_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(app, ["export", str(cnn_run), "--format", "tflite"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--format" in result.stderr

    import polytask.export.onnx as module

    def fails(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("Unsupported op: aten::frobnicate\nlong traceback follows")

    monkeypatch.setattr(module, "_export", fails)
    out = tmp_path / "never.onnx"
    result = CliRunner().invoke(app, ["export", str(cnn_run), "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "dynamo: RuntimeError: Unsupported op: aten::frobnicate" in result.stderr
    assert "torchscript: RuntimeError" in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial file left


def test_parity_failure_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment, model = _build(tmp_path, "mlp")
    batches = sample_batches(experiment, model, sizes=(2,))
    import polytask.export.onnx as module

    monkeypatch.setattr(module, "_parity", lambda *args: 0.5)
    with pytest.raises(ExportError, match=r"differ by 0.5 \(max abs\)"):
        export_onnx(model, batches, tmp_path / "m.onnx", input_kind="features")
    assert not (tmp_path / "m.onnx").exists()


def test_dense_bilstm_path_matches_packed_sequences() -> None:
    """What the exporters trace for a BiLSTM (no packed sequences) computes what training
    computes, for rows of every length (0 included) in one batch."""
    from polytask.nn.bilstm import run_dense, run_packed

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, batch_first=True, bidirectional=True)
    x = torch.randn(4, 6, 4)
    lengths = torch.tensor([6, 2, 0, 5])
    with torch.no_grad():
        packed, h_packed = run_packed(lstm, x, lengths)
        dense, h_dense = run_dense(lstm, x, lengths)
    torch.testing.assert_close(dense, packed, atol=1e-6, rtol=0)
    torch.testing.assert_close(h_dense, h_packed, atol=1e-6, rtol=0)
