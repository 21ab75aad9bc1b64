"""IDX reading (parts, gzip, header checks), the overlaid Fashion-MNIST pairs, image collation."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch
from shared_data import require_data

from polytask.data.base import Example
from polytask.data.collate import Collator
from polytask.data.images import (
    FASHION_CLASSES,
    fashion_pairs,
    load_fashion_mnist,
    make_pairs,
    overlay,
    parse_idx,
    read_idx,
)
from polytask.tasks import Classification


def _idx(values: torch.Tensor) -> bytes:
    head = struct.pack(">HBB", 0, 8, values.dim()) + struct.pack(f">{values.dim()}I", *values.shape)
    return head + bytes(values.flatten().tolist())


# ------------------------------------------------------------------------- IDX
def test_parse_idx_round_trip_and_header_errors() -> None:
    images = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    assert torch.equal(parse_idx(_idx(images), dims=3), images)
    labels = torch.tensor([3, 1, 4], dtype=torch.uint8)
    assert torch.equal(parse_idx(_idx(labels), dims=1), labels)
    with pytest.raises(ValueError, match="magic number 0x00000801.*expected 3"):
        parse_idx(_idx(labels), dims=3)
    with pytest.raises(
        ValueError, match="magic number 0x00000d03"
    ):  # float IDX: not unsigned bytes
        parse_idx(b"\x00\x00\x0d\x03" + _idx(images)[4:], dims=3)
    with pytest.raises(ValueError, match="24 values but 23 bytes"):
        parse_idx(_idx(images)[:-1], dims=3)
    with pytest.raises(ValueError, match="too short"):
        parse_idx(b"\x00\x00", dims=1)


def test_read_idx_joins_numbered_parts_before_gunzip(tmp_path) -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    blob = gzip.compress(_idx(images))
    cut = [blob[i : i + 1000] for i in range(0, len(blob), 1000)]
    assert len(cut) > 2
    for k, chunk in enumerate(cut):
        (tmp_path / f"x-images.gz.part-{k:02d}").write_bytes(chunk)
    assert torch.equal(read_idx(tmp_path / "x-images.gz", dims=3), images)
    (tmp_path / "y.gz").write_bytes(blob)  # a whole file is read as it is
    assert torch.equal(read_idx(tmp_path / "y.gz", dims=3), images)
    (tmp_path / "x-images.gz.part-01").unlink()  # a gap in the numbering
    with pytest.raises(ValueError, match=r"parts \[0, 2, 3\] are not numbered"):
        read_idx(tmp_path / "x-images.gz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_idx(tmp_path / "absent.gz")


def test_parts_in_the_wrong_order_fail_clearly(tmp_path) -> None:
    blob = gzip.compress(_idx(torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8)))
    half = len(blob) // 2
    (tmp_path / "z.gz.part-00").write_bytes(blob[half:])
    (tmp_path / "z.gz.part-01").write_bytes(blob[:half])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "z.gz")


# --------------------------------------------------------------------- overlay
def test_overlay_geometry_on_a_hand_made_pair() -> None:
    """28×28 items on a 36×36 canvas (m = 8): left at (u, v) = (1, 3); right's top-left at
    (8 − 2, 8 − 0) = (6, 8). Overlap rows 6..28, cols 8..30 takes the max."""
    left = torch.full((28, 28), 100, dtype=torch.uint8)
    left[0, 0] = 7
    right = torch.full((28, 28), 50, dtype=torch.uint8)
    right[27, 27] = 9
    right[0, 0] = 200  # inside the overlap: beats the left item's 100
    canvas = overlay(left, right, (1, 3), (2, 0))
    assert canvas.shape == (36, 36) and canvas.dtype == torch.uint8
    assert (
        canvas[1, 3] == 7 and canvas[0].sum() == 0 and canvas[:, :3].sum() == 0
    )  # left starts at (1, 3)
    assert canvas[33, 35] == 9 and canvas[34:].sum() == 0  # right ends at (33, 35)
    assert canvas[6, 8] == 200  # right's corner inside the overlap, max(100, 200)
    assert canvas[10, 10] == 100  # overlap: max(100, 50)
    assert canvas[30, 30] == 50 and canvas[5, 30] == 100 and canvas[30, 5] == 0
    expected = torch.zeros(36, 36, dtype=torch.uint8)
    expected[1:29, 3:31] = left
    expected[6:34, 8:36] = torch.maximum(expected[6:34, 8:36], right)
    assert torch.equal(canvas, expected)
    with pytest.raises(ValueError, match="off the 36×36 canvas"):
        overlay(left, right, (9, 0), (0, 0))


def test_make_pairs_is_deterministic_and_matches_overlay() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(12) % 10
    pool = torch.tensor([3, 7, 1, 9, 0])
    a, b = make_pairs(images, labels, pool, seed=5), make_pairs(images, labels, pool, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(make_pairs(images, labels, pool, seed=6)["image"], a["image"])
    assert torch.equal(a["left_index"], pool)
    assert set(a["right_index"].tolist()) <= set(pool.tolist())
    assert bool((a["right_index"] != a["left_index"]).all())  # never paired with itself
    assert torch.equal(a["left"], labels[pool]) and torch.equal(
        a["right"], labels[a["right_index"]]
    )
    assert int(a["left_shift"].min()) >= 0 and int(a["left_shift"].max()) <= 4
    for k in range(5):
        want = overlay(
            images[a["left_index"][k]],
            images[a["right_index"][k]],
            tuple(a["left_shift"][k].tolist()),
            tuple(a["right_shift"][k].tolist()),
        )
        assert torch.equal(a["image"][k], want)
    with pytest.raises(ValueError, match="max_shift"):
        make_pairs(images, labels, pool, seed=0, max_shift=9)


# ------------------------------------------------------------------- real files
def test_real_files_counts_and_labels() -> None:
    require_data("fashion-mnist/README.md")
    for split, n in (("train", 60000), ("t10k", 10000)):
        images, labels = load_fashion_mnist(split)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and int(labels.min()) == 0 and int(labels.max()) == 9
        assert labels.bincount().tolist() == [n // 10] * 10
        assert int(images.max()) == 255 and int(images.min()) == 0


def test_real_pairs_sizes_labels_and_determinism() -> None:
    require_data("fashion-mnist/README.md")
    pairs = fashion_pairs(seed=3, n_train=300, n_val=100, n_test=200)
    assert {k: len(v) for k, v in pairs.items()} == {"train": 300, "val": 100, "test": 200}
    again = fashion_pairs(seed=3, n_train=300, n_val=100, n_test=200)
    other = fashion_pairs(seed=4, n_train=300, n_val=100, n_test=200)
    for split in pairs:
        for e in pairs[split]:
            assert e.inputs["image"].shape == (36, 36) and e.inputs["image"].dtype == torch.uint8
            assert e.targets["left"] in FASHION_CLASSES and e.targets["right"] in FASHION_CLASSES
        assert all(
            torch.equal(x.inputs["image"], y.inputs["image"]) and x.targets == y.targets
            for x, y in zip(pairs[split], again[split])
        )
        assert not all(
            torch.equal(x.inputs["image"], y.inputs["image"])
            for x, y in zip(pairs[split], other[split])
        )
    # both tasks see every class in 300 pairs, and the two labels are not the same task
    for t in ("left", "right"):
        assert {e.targets[t] for e in pairs["train"]} == set(FASHION_CLASSES)
    assert sum(e.targets["left"] != e.targets["right"] for e in pairs["train"]) > 200


def test_real_pairs_are_built_from_the_split_images() -> None:
    """Rebuild the first test pair from the t10k images it names."""
    require_data("fashion-mnist/README.md")
    images, labels = load_fashion_mnist("t10k")
    g = torch.Generator().manual_seed(0)
    pool = torch.randperm(10000, generator=g)[:50]
    pairs = make_pairs(images, labels, pool, seed=1)
    k = 0
    want = overlay(
        images[pairs["left_index"][k]],
        images[pairs["right_index"][k]],
        tuple(pairs["left_shift"][k].tolist()),
        tuple(pairs["right_shift"][k].tolist()),
    )
    assert torch.equal(pairs["image"][k], want)
    assert int(pairs["image"][k].max()) > 0


# ------------------------------------------------------------------- collation
def test_collator_stacks_images_and_scales_uint8() -> None:
    kind = Classification(list(FASHION_CLASSES))
    collate = Collator({"left": kind, "right": kind}, input_kind="image")
    img = torch.zeros(36, 36, dtype=torch.uint8)
    img[0, 0] = 255
    examples = [
        Example(inputs={"image": img}, targets={"left": "Bag", "right": None}),
        Example(
            inputs={"image": torch.full((1, 36, 36), 0.5)}, targets={"left": "Coat", "right": "Bag"}
        ),
    ]
    batch = collate(examples)
    assert (
        batch.inputs["image"].shape == (2, 1, 36, 36)
        and batch.inputs["image"].dtype == torch.float32
    )
    assert batch.inputs["image"][0, 0, 0, 0] == 1.0 and batch.inputs["image"][1].max() == 0.5
    assert batch.targets["left"][0].tolist() == [8, 4] and batch.targets["right"][1].tolist() == [
        False,
        True,
    ]
    with pytest.raises(ValueError, match="different shapes"):
        collate(
            [examples[0], Example(inputs={"image": torch.zeros(28, 28)}, targets={"left": "Bag"})]
        )
    with pytest.raises(ValueError, match="no inputs\\['image'\\]"):
        collate([Example(inputs={"features": [1.0]}, targets={"left": "Bag"})])
