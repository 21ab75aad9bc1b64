"""``format: images`` from a YAML config on the real Fashion-MNIST files of ../shared/data
(the image files stored as ``.part-NN`` chunks): IDX files (chunks, gzip, plain), a folder of
PNG files with a labels CSV, the overlaid pairs of benchmarks/architectures/fashion_pairs.py
(examples/fashion_pairs.yaml), and the one-line errors."""

from __future__ import annotations

import argparse
import copy
import gzip
import importlib
import json
import struct
from pathlib import Path

import pytest
import torch
import yaml
from shared_data import require_data
from typer.testing import CliRunner

from polytask.cli import app
from polytask.config.build import Experiment
from polytask.config.errors import ConfigError
from polytask.config.load import validate
from polytask.data import formats
from polytask.data import images as images_module
from polytask.data.images import FASHION_CLASSES, fashion_pairs, read_idx
from polytask.engine.trainer import TrainerConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = {"epochs": 1, "batch_size": 32, "eval_batch_size": 256, "threads": 1}
T10K = "fashion-mnist/t10k-images-idx3-ubyte.gz"
T10K_LABELS = "fashion-mnist/t10k-labels-idx1-ubyte.gz"
#: small pairs for tests: the construction is the benchmark's, the sizes are cut
SMALL = {"n_train": 120, "n_val": 30, "n_test": 40}


def _t10k(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` t10k images (n, 28, 28) and labels, read from the shared chunks."""
    require_data(T10K + ".part-00")
    return read_idx(f"$DATA/{T10K}", dims=3)[:n], read_idx(f"$DATA/{T10K_LABELS}", dims=1)[:n]


def _idx_bytes(tensor: torch.Tensor) -> bytes:
    dims = tensor.dim()
    head = struct.pack(">HBB", 0, 0x08, dims) + struct.pack(f">{dims}I", *tensor.shape)
    return head + bytes(tensor.contiguous().view(-1).tolist())


def _config(source: dict, tasks: dict, encoder: dict | None = None) -> dict:
    return {
        "name": "images",
        "seed": 0,
        "tasks": tasks,
        "data": {"sources": {"img": source}},
        "model": {"encoder": encoder or {"type": "lenet", "hidden": 8, "channels": [2, 4]}},
        "trainer": dict(FAST),
    }


def _items() -> dict:
    return {"item": {"kind": "classification", "labels": list(FASHION_CLASSES)}}


def _all(exp: Experiment, name: str = "img") -> list:
    s = exp.sources[name]
    return s.train + s.val + s.test


def test_idx_source_from_chunks_counts_labels_and_shapes(tmp_path: Path) -> None:
    pixels, labels = _t10k(10000)
    raw = _config(
        {
            "format": "images",
            "train": f"$DATA/{T10K}",  # only T10K.part-00, -01 exist: joined in order
            "tasks": {"item": "label"},
            "options": {"classes": "fashion-mnist"},
            "limit": 300,
        },
        _items(),
    )
    exp = Experiment(validate(raw), tmp_path)
    everything = _all(exp)
    assert len(everything) == 300 and len({ex.id for ex in everything}) == 300
    for ex in everything[:50]:
        k = int(ex.id.split(":")[1])
        assert ex.id.startswith("t10k-images-idx3-ubyte:")
        assert ex.inputs["image"].shape == (28, 28) and ex.inputs["image"].dtype == torch.uint8
        assert torch.equal(ex.inputs["image"], pixels[k])
        assert ex.targets == {"item": FASHION_CLASSES[int(labels[k])]}
    # the encoder is sized from the data: 28 x 28, one channel
    encoder = exp.build_encoder()
    assert encoder.image_size == (28, 28) and encoder.in_channels == 1
    batch = exp.collator()(everything[:4])
    assert batch.inputs["image"].shape == (4, 1, 28, 28)
    assert exp.vocab_json()["image_shape"] == [1, 28, 28]


def test_idx_plain_gzip_and_chunked_files_read_alike(tmp_path: Path) -> None:
    pixels, labels = _t10k(60)
    data, marks = _idx_bytes(pixels), _idx_bytes(labels)
    (tmp_path / "a-images-idx3-ubyte").write_bytes(data)
    (tmp_path / "a-labels-idx1-ubyte").write_bytes(marks)
    packed = gzip.compress(data)
    (tmp_path / "b-images-idx3-ubyte.gz.part-00").write_bytes(packed[:1000])
    (tmp_path / "b-images-idx3-ubyte.gz.part-01").write_bytes(packed[1000:])
    (tmp_path / "b-labels-idx1-ubyte.gz").write_bytes(gzip.compress(marks))
    reader = formats.FORMATS.resolve("images")({"item": "label"})
    plain = reader.read(tmp_path / "a-images-idx3-ubyte")
    chunked = reader.read(tmp_path / "b-images-idx3-ubyte.gz")
    assert len(plain) == len(chunked) == 60
    for p, c, k in zip(plain, chunked, range(60)):
        assert torch.equal(p.inputs["image"], c.inputs["image"])
        assert p.targets == c.targets == {"item": str(int(labels[k]))}  # no classes: numbers
    # train and test files of a config; val carved from train
    raw = _config(
        {
            "format": "images",
            "train": "a-images-idx3-ubyte",
            "test": "b-images-idx3-ubyte.gz",
            "tasks": {"item": "label"},
        },
        {"item": {"kind": "classification"}},
    )
    exp = Experiment(validate(raw), tmp_path)
    s = exp.sources["img"]
    assert (len(s.train) + len(s.val), len(s.test)) == (60, 60)
    assert sorted(exp.tasks["item"].kind.labels) == sorted({str(int(v)) for v in labels})


def _png_folder(tmp: Path, n: int = 24) -> tuple[Path, torch.Tensor, torch.Tensor]:
    from PIL import Image

    pixels, labels = _t10k(n)
    folder = tmp / "pngs"
    folder.mkdir()
    lines = ["file,item,top"]
    for k in range(n):
        Image.fromarray(pixels[k].numpy(), mode="L").save(folder / f"{k:03d}.png")
        cls = int(labels[k])
        top = "" if k % 5 == 0 else ("yes" if cls in (0, 2, 4, 6) else "no")
        lines.append(f"{k:03d}.png,{FASHION_CLASSES[cls]},{top}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder, pixels, labels


def test_folder_of_pngs_with_a_labels_file(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    folder, pixels, labels = _png_folder(tmp_path)
    source = {"format": "images", "train": "pngs", "tasks": {"item": "item", "top": "top"}}
    tasks = {**_items(), "top": {"kind": "classification"}}
    exp = Experiment(validate(_config(source, tasks)), tmp_path)
    everything = _all(exp)
    assert len(everything) == 24
    for ex in everything:
        k = int(ex.id.removesuffix(".png"))
        assert torch.equal(ex.inputs["image"], pixels[k])  # PNG is lossless
        assert ex.targets["item"] == FASHION_CLASSES[int(labels[k])]
        assert (ex.targets["top"] is None) == (k % 5 == 0)  # an empty cell: missing, masked
    assert exp.tasks["top"].kind.labels == ["no", "yes"]
    # RGB and resizing
    reader = formats.FORMATS.resolve("images")
    rgb = reader({"item": "item"}, mode="RGB", size=[32, 30]).read(folder)
    assert [ex.id for ex in rgb] == [f"{k:03d}.png" for k in range(24)]
    assert rgb[0].inputs["image"].shape == (3, 32, 30)
    assert rgb[0].targets == {"item": FASHION_CLASSES[int(labels[0])]}
    # images of two sizes: one line naming the file and the option that fixes it
    from PIL import Image

    Image.new("L", (30, 30)).save(folder / "000.png")
    with pytest.raises(ConfigError) as err:
        Experiment(validate(_config(source, tasks)), tmp_path)
    assert "000.png" in str(err.value) and "options.size" in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_without_pillow_is_a_one_line_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pngs").mkdir()

    def missing() -> None:
        raise ImportError("reading PNG / JPEG images needs Pillow (No module named 'PIL')")

    monkeypatch.setattr(images_module, "require_pillow", missing)
    source = {"format": "images", "train": "pngs", "tasks": {"item": "item"}}
    with pytest.raises(ConfigError) as err:
        Experiment(validate(_config(source, _items())), tmp_path)
    message = str(err.value)
    assert message.startswith("data.sources.img.format: reading PNG")
    assert "pip install 'polytask[images]'" in message and "\n" not in message


def _pairs(**options: object) -> dict:
    raw = yaml.safe_load((EXAMPLES / "fashion_pairs.yaml").read_text())
    raw["data"]["sources"]["train"]["options"].update(SMALL, **options)
    raw["trainer"].update(FAST)
    return raw


def test_pairs_are_the_benchmarks_pairs_for_the_seed(tmp_path: Path) -> None:
    require_data(T10K + ".part-00")
    raw = _pairs()
    raw["seed"] = 3
    exp = Experiment(validate(raw), tmp_path)
    got = exp.sources["train"]
    want = fashion_pairs(seed=3, **SMALL)
    for name in ("train", "val", "test"):
        mine, theirs = getattr(got, name), want[name]
        assert len(mine) == len(theirs) == {"train": 120, "val": 30, "test": 40}[name]
        assert [ex.id for ex in mine] == [ex.id for ex in theirs]
        assert [ex.targets for ex in mine] == [ex.targets for ex in theirs]
        assert all(torch.equal(a.inputs["image"], b.inputs["image"]) for a, b in zip(mine, theirs))
    assert got.train[0].inputs["image"].shape == (36, 36)
    # data.split_seed pins the data whatever the seed; another seed, other pairs
    raw["data"]["split_seed"] = 3
    raw["seed"] = 9
    again = Experiment(validate(copy.deepcopy(raw)), tmp_path).sources["train"]
    assert [ex.targets for ex in again.train] == [ex.targets for ex in got.train]
    del raw["data"]["split_seed"]
    other = Experiment(validate(raw), tmp_path).sources["train"]
    assert [ex.targets for ex in other.train] != [ex.targets for ex in got.train]
    # the benchmark's model: the MultiMNIST LeNet, a 50-50-10 head per task (47,450 weights)
    model = exp.build_model()
    assert sum(p.numel() for p in model.parameters()) == 47450


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda s: s["options"].__setitem__("n_trian", 100), "options.n_trian"),
        (lambda s: s["options"].__setitem__("max_shift", -1), "options.max_shift"),
        (lambda s: s["options"].__setitem__("classes", ["a"]), "options.classes"),
        (lambda s: s["options"].__setitem__("pairs", "yes"), "options.pairs"),
        (lambda s: s["tasks"].__setitem__("left", "middle"), "tasks.left"),
        (lambda s: s.__setitem__("test", s["train"]), "options.pairs"),
        (lambda s: s["options"].__setitem__("pairs", False), "options.n_train"),
        (lambda s: s["options"].__setitem__("mode", "CMYK"), "options.mode"),
    ],
)
def test_bad_image_options_are_one_line_errors(tmp_path: Path, edit, where: str) -> None:
    require_data(T10K + ".part-00")
    raw = _pairs()
    edit(raw["data"]["sources"]["train"])
    with pytest.raises(ConfigError) as err:
        Experiment(validate(raw), tmp_path)
    message = str(err.value)
    assert message.startswith(f"data.sources.train.{where}:"), message
    assert "\n" not in message and "; fix: " in message


def test_idx_file_errors_name_the_field(tmp_path: Path) -> None:
    require_data(T10K + ".part-00")
    source = {"format": "images", "train": f"$DATA/{T10K}", "tasks": {"item": "colour"}}
    with pytest.raises(ConfigError, match=r"^data\.sources\.img\.tasks\.item: an IDX file"):
        Experiment(validate(_config(source, _items())), tmp_path)
    source = {"format": "images", "train": "$DATA/fashion-mnist", "tasks": {"item": "item"}}
    source["options"] = {"pairs": True, "n_trainn": 3}
    with pytest.raises(ConfigError, match=r"options\.n_trainn: not an option of format images"):
        Experiment(validate(_config(source, _items())), tmp_path)


def test_images_need_an_image_encoder(tmp_path: Path) -> None:
    require_data(T10K + ".part-00")
    raw = _pairs()
    raw["model"] = {"encoder": {"type": "mlp", "hidden": [8]}}
    with pytest.raises(ConfigError, match=r"^model\.encoder\.type: data\.sources\.train gives"):
        Experiment(validate(raw), tmp_path)


def test_fashion_pairs_example_trains_the_benchmarks_model_from_the_command_line(
    tmp_path: Path,
) -> None:
    require_data(T10K + ".part-00")
    sets = [f"data.sources.train.options.{k}={v}" for k, v in SMALL.items()]
    sets += ["trainer.max_steps=8", "trainer.eval_batch_size=64", "trainer.threads=1"]
    args = ["train", str(EXAMPLES / "fashion_pairs.yaml"), "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, [*args, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert set(metrics) == {"left", "right"} and 0.0 <= metrics["left"]["accuracy"] <= 1.0
    # the benchmark's own code (benchmarks/architectures/fashion_pairs.py) on the same
    # sizes trains the same model step for step: the same pairs, initialisation and batches
    bench = importlib.import_module("architectures.fashion_pairs")
    runner = importlib.import_module("stl_vs_mtl")
    options = argparse.Namespace(dropout=0.0, head_hidden=50, archs=["hard"])
    data = fashion_pairs(seed=0, **SMALL)
    split = runner.Split(data["train"], data["val"], data["test"])
    config = TrainerConfig(epochs=8, max_steps=8, batch_size=64, lr=3e-3, threads=1)
    hard = bench.builders(options)[1]["hard"]
    built: list[torch.nn.Module] = []

    def build(names: list[str]) -> torch.nn.Module:
        built.append(hard(names))
        return built[-1]

    ran = runner.train_and_test(
        build, ["left", "right"], bench.pair_tasks(), split, "image", config, 0
    )
    for task in ("left", "right"):
        assert ran.test[task] == pytest.approx(metrics[task], abs=1e-12)
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert vocab["image_shape"] == [1, 36, 36]
    from polytask.runs import load

    run = load(tmp_path / "run", device="cpu")  # rebuilt without the data: 36 x 36 from the run
    mine, theirs = run.model.state_dict(), built[0].state_dict()
    assert list(mine) == list(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # the best epoch's weights
    predicted = run.predict(fashion_pairs(seed=0, **SMALL)["test"][:2])
    assert {p["left"]["label"] for p in predicted} <= set(FASHION_CLASSES)
