"""Image data: IDX files (the MNIST family) and MultiMNIST-style overlaid pairs of Fashion-MNIST.

**IDX.** A big-endian header (two zero bytes, a type byte — ``0x08`` = unsigned byte — and
the number of dimensions), one 32-bit size per dimension, then the values. Images are
``0x00000803, N, rows, cols``; labels ``0x00000801, N``. Files may be gzip-compressed and,
in the shared data folder, cut into byte chunks ``NAME.gz.part-00``, ``.part-01``, ... that
are joined in order before decompression (see ``fashion-mnist/README.md`` there).

**Files and folders** (``format: images`` in a config, :class:`polytask.data.formats.Images`):
:func:`read_idx_examples` reads an IDX images file and the labels file beside it;
:func:`read_image_folder` a folder of PNG / JPEG files (Pillow, the ``images`` extra) with a
CSV labels file ``file,label[,label2...]``.

**Pairs** (the MultiMNIST construction of Sabour et al. 2017 as used by Sener & Koltun 2018,
"Multi-Task Learning as Multi-Objective Optimization", here on Fashion-MNIST). Each example
overlays two 28 × 28 items on a ``canvas × canvas`` black image (default 36 × 36): the
*left* item near the top-left corner and the *right* item near the bottom-right corner.
With ``m = canvas − 28`` (8 by default) and shifts ``u, v, u', v'`` drawn uniformly from
``0..max_shift`` (default 4) for each example,

    left item's top-left pixel   at (row u,      col v)
    right item's top-left pixel  at (row m − u', col m − v')

i.e. each item starts flush in its corner and moves up to ``max_shift`` pixels towards the
centre, independently along each axis. Where the items overlap the canvas takes the
pixel-wise maximum (``uint8``). The two tasks ``left`` and ``right`` are 10-way
classification of the two items' classes (:data:`FASHION_CLASSES`).

Which items are paired: the split's pool of images is taken in a seeded random order; the
k-th example's left item is the k-th image of that order, its right item another image of
the same pool drawn uniformly (never the same image), so no image crosses between train,
validation and test. Train and validation pairs come from the 60 000 training images
(``n_train`` and ``n_val`` disjoint images, a seeded subsample), test pairs from the 10 000
``t10k`` images. Everything is a deterministic function of ``seed``.
"""

from __future__ import annotations

import functools
import gzip
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from polytask.data.base import Example
from polytask.data.readers import PathLike, resolve_data_path
from polytask.errors import DataError, OptionError

__all__ = [
    "FASHION_CLASSES",
    "IMAGE_MODES",
    "fashion_pairs",
    "labels_path_for",
    "load_fashion_mnist",
    "load_image",
    "make_pairs",
    "overlay",
    "parse_idx",
    "read_idx",
    "read_idx_examples",
    "read_image_folder",
    "require_pillow",
]

#: Fashion-MNIST class names, index = label
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


# ------------------------------------------------------------------------------ IDX
def parse_idx(data: bytes, where: str = "IDX data", dims: int | None = None) -> Tensor:
    """The ``uint8`` tensor an (uncompressed) IDX byte string holds, checking its header.

    ``dims``: the number of dimensions expected (3 for images, 1 for labels)."""
    if len(data) < 4:
        raise ValueError(f"{where}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(
            where,
            f"magic number 0x{data[:4].hex()} is not an unsigned-byte IDX "
            "file (expected 0x00000801 for labels or 0x00000803 for images)",
            "give the decompressed file, parts joined in order",
        )
    if dims is not None and ndim != dims:
        raise DataError(
            where,
            f"magic number 0x{data[:4].hex()} says {ndim} dimension(s), "
            f"expected {dims} (0x0000080{dims})",
            f"check that this is the {'image' if dims == 3 else 'label'} file",
        )
    head = 4 + 4 * ndim
    if len(data) < head:
        raise ValueError(f"{where}: truncated header ({len(data)} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:head])
    count = 1
    for s in shape:
        count *= s
    if len(data) - head != count:
        raise DataError(
            where,
            f"header says shape {shape} = {count} values but {len(data) - head} bytes follow it",
            "the file is truncated or its parts were joined out of order: restore it",
        )
    return torch.frombuffer(bytearray(data[head:]), dtype=torch.uint8).reshape(shape)


def _part_files(path: Path) -> list[Path]:
    parts = sorted(path.parent.glob(path.name + ".part-*"))
    numbers = []
    for p in parts:
        m = re.fullmatch(re.escape(path.name) + r"\.part-(\d+)", p.name)
        if m is None:
            raise DataError(
                str(p), "unexpected part name", f"parts are named {path.name}.part-00, -01, ..."
            )
        numbers.append(int(m.group(1)))
    if numbers != list(range(len(numbers))):
        raise DataError(
            str(path),
            f"parts {numbers} are not numbered 0..{len(numbers) - 1} without gaps",
            "restore the missing part files",
        )
    return parts


def read_idx(path: PathLike, dims: int | None = None) -> Tensor:
    """Read an IDX file: plain, ``.gz``, or a ``.gz`` stored as ``PATH.part-NN`` chunks
    (joined in numeric order, then decompressed). ``$DATA/`` expands to the data root."""
    p = resolve_data_path(path)
    if p.exists():
        raw = p.read_bytes()
    else:
        parts = _part_files(p)
        if not parts:
            raise FileNotFoundError(
                f"{p}: no such file and no {p.name}.part-NN chunks "
                "(set POLYTASK_DATA to the shared data folder)"
            )
        raw = b"".join(q.read_bytes() for q in parts)
    if p.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(
                str(p),
                f"not a valid gzip stream ({err})",
                "check that every part is complete and joined in order",
            ) from None
    return parse_idx(raw, where=str(p), dims=dims)


@functools.lru_cache(maxsize=4)
def _load(split: str, root: str) -> tuple[Tensor, Tensor]:
    images_name, labels_name, n = _FILES[split]
    folder = resolve_data_path(root)
    images = read_idx(folder / images_name, dims=3)
    labels = read_idx(folder / labels_name, dims=1).long()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels in split {split!r}"
        )
    if images.shape[0] != n or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"{folder / images_name}: shape {tuple(images.shape)}, expected ({n}, 28, 28)"
        )
    if int(labels.min()) < 0 or int(labels.max()) > 9:
        raise ValueError(f"{folder / labels_name}: labels outside 0..9")
    return images, labels


def load_fashion_mnist(
    split: str = "train", root: PathLike = "$DATA/fashion-mnist"
) -> tuple[Tensor, Tensor]:
    """``(images (N, 28, 28) uint8, labels (N,) long)`` of ``split`` ``"train"`` (60 000) or
    ``"t10k"`` / ``"test"`` (10 000). Cached per process; do not modify the tensors."""
    split = "t10k" if split == "test" else split
    if split not in _FILES:
        raise OptionError("split", f"unknown split {split!r}", "use 'train' or 't10k'")
    return _load(split, str(root))


# ---------------------------------------------------------------------------- pairs
def overlay(
    left: Tensor,
    right: Tensor,
    left_shift: tuple[int, int],
    right_shift: tuple[int, int],
    canvas: int = 36,
) -> Tensor:
    """One pair: ``left`` at (row, col) = ``left_shift``, ``right`` with its top-left pixel at
    ``(m − right_shift[0], m − right_shift[1])``, ``m = canvas − size``; pixel-wise max."""
    size = left.shape[-1]
    if tuple(left.shape) != (size, size) or left.shape != right.shape:
        raise ValueError(
            f"overlay: items must be square and of one shape; got {tuple(left.shape)}, "
            f"{tuple(right.shape)}"
        )
    m = canvas - size
    for s in (*left_shift, *right_shift):
        if not 0 <= s <= m:
            raise ValueError(
                f"overlay: shift {s} puts an item off the {canvas}×{canvas} canvas (0..{m})"
            )
    out = torch.zeros(canvas, canvas, dtype=left.dtype)
    r, c = left_shift
    out[r : r + size, c : c + size] = left
    r, c = m - right_shift[0], m - right_shift[1]
    out[r : r + size, c : c + size] = torch.maximum(out[r : r + size, c : c + size], right)
    return out


def make_pairs(
    images: Tensor, labels: Tensor, pool: Tensor, seed: int, canvas: int = 36, max_shift: int = 4
) -> dict[str, Tensor]:
    """Overlaid pairs whose left items are ``images[pool]`` in the order given and whose right
    items are other images of ``pool`` (uniform, never the same index).

    Returns ``image`` (n, canvas, canvas) uint8, ``left`` and ``right`` labels (n,), the
    image indices ``left_index`` / ``right_index`` and the shifts ``left_shift`` /
    ``right_shift`` (n, 2) (see the module docstring)."""
    n = pool.numel()
    size = images.shape[-1]
    if canvas - size < max_shift or max_shift < 0:
        raise ValueError(
            f"make_pairs: max_shift={max_shift} must be in 0..{canvas - size} for a "
            f"{canvas}×{canvas} canvas and {size}×{size} items"
        )
    if n < 2:
        raise ValueError("make_pairs: a pool needs at least 2 images")
    g = torch.Generator().manual_seed(seed)
    offset = torch.randint(1, n, (n,), generator=g)  # partner position ≠ own position
    partner = pool[(torch.arange(n) + offset) % n]
    shifts = torch.randint(0, max_shift + 1, (n, 4), generator=g)
    out = torch.zeros(n, canvas, canvas, dtype=torch.uint8)
    m = canvas - size
    for k in range(n):  # slicing per example: 60k pairs take about a second
        u, v, u2, v2 = shifts[k].tolist()
        out[k, u : u + size, v : v + size] = images[pool[k]]
        region = out[k, m - u2 : m - u2 + size, m - v2 : m - v2 + size]
        torch.maximum(region, images[partner[k]], out=region)
    return {
        "image": out,
        "left": labels[pool],
        "right": labels[partner],
        "left_index": pool.clone(),
        "right_index": partner,
        "left_shift": shifts[:, :2],
        "right_shift": shifts[:, 2:],
    }


def _examples(pairs: dict[str, Tensor], split: str) -> list[Example]:
    left, right = pairs["left"].tolist(), pairs["right"].tolist()
    return [
        Example(
            inputs={"image": pairs["image"][k]},
            targets={"left": FASHION_CLASSES[left[k]], "right": FASHION_CLASSES[right[k]]},
            id=f"{split}-{k}",
        )
        for k in range(len(left))
    ]


def fashion_pairs(
    seed: int = 0,
    n_train: int = 10000,
    n_val: int = 2000,
    n_test: int | None = None,
    root: PathLike = "$DATA/fashion-mnist",
    canvas: int = 36,
    max_shift: int = 4,
) -> dict[str, list[Example]]:
    """``{"train", "val", "test"}`` lists of pair examples (``inputs["image"]`` (canvas, canvas)
    uint8, targets ``left`` / ``right`` class names) built as the module docstring says.

    ``n_train + n_val`` ≤ 60 000 training images are drawn (seeded) without replacement;
    ``n_test`` ≤ 10 000 t10k images (all of them by default)."""
    train_images, train_labels = load_fashion_mnist("train", root)
    test_images, test_labels = load_fashion_mnist("t10k", root)
    if n_train < 2 or n_val < 2 or n_train + n_val > train_images.shape[0]:
        raise ValueError(
            f"fashion_pairs: n_train={n_train}, n_val={n_val} must be ≥ 2 each and together "
            f"≤ {train_images.shape[0]}"
        )
    n_test = test_images.shape[0] if n_test is None else n_test
    if not 2 <= n_test <= test_images.shape[0]:
        raise ValueError(f"fashion_pairs: n_test={n_test} must be in 2..{test_images.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(train_images.shape[0], generator=g)
    test_order = torch.randperm(test_images.shape[0], generator=g)[:n_test]
    # one derived seed per split, so changing n_val leaves the train pairs' partners alone
    seeds = torch.randint(0, 2**62, (3,), generator=g).tolist()
    splits = {
        "train": make_pairs(
            train_images, train_labels, order[:n_train], seeds[0], canvas, max_shift
        ),
        "val": make_pairs(
            train_images,
            train_labels,
            order[n_train : n_train + n_val],
            seeds[1],
            canvas,
            max_shift,
        ),
        "test": make_pairs(test_images, test_labels, test_order, seeds[2], canvas, max_shift),
    }
    return {name: _examples(pairs, name) for name, pairs in splits.items()}


# --------------------------------------------------------------- files and folders
def labels_path_for(images: Path) -> Path:
    """The IDX labels file beside an IDX images file, named as the MNIST family names it
    (``…-images-idx3-ubyte…`` -> ``…-labels-idx1-ubyte…``)."""
    if "images-idx3" not in images.name:
        raise DataError(
            str(images),
            "cannot tell which file holds its labels",
            "name the images file NAME-images-idx3-ubyte[.gz] and its labels file "
            "NAME-labels-idx1-ubyte[.gz] beside it",
        )
    return images.with_name(images.name.replace("images-idx3", "labels-idx1"))


def read_idx_examples(
    images: PathLike, classes: Sequence[str] | None = None, labels: PathLike | None = None
) -> list[Example]:
    """Examples of an IDX images file (``inputs["image"]`` (H, W) ``uint8``) with the label of
    its IDX labels file (:func:`labels_path_for` unless ``labels`` names it) as target
    ``label``: the class name ``classes[i]`` when ``classes`` is given, else ``str(i)``.
    Plain, gzip or ``.part-NN`` chunks, as :func:`read_idx`."""
    path = resolve_data_path(images)
    pixels = read_idx(path, dims=3)
    label_path = resolve_data_path(labels) if labels is not None else labels_path_for(path)
    values = read_idx(label_path, dims=1).tolist()
    if len(values) != pixels.shape[0]:
        raise DataError(
            str(label_path),
            f"{len(values)} labels for the {pixels.shape[0]} images of {path.name}",
            "give the labels file of the same split",
        )
    if classes is not None and values and max(values) >= len(classes):
        raise DataError(
            str(label_path),
            f"label {max(values)} but only {len(classes)} class names",
            "give one class name per label value in options.classes",
        )
    name = path.name.removesuffix(".gz")
    return [
        Example(
            inputs={"image": pixels[k]},
            targets={"label": classes[v] if classes is not None else str(v)},
            id=f"{name}:{k}",
        )
        for k, v in enumerate(values)
    ]


def require_pillow() -> ModuleType:
    """``PIL.Image``, or an ImportError that names the extra to install."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised only without Pillow
        raise ImportError(
            f"reading PNG / JPEG images needs Pillow ({err}); fix: pip install 'polytask[images]'"
        ) from None
    return Image


IMAGE_MODES = ("L", "RGB")


def load_image(path: Path, mode: str = "L", size: Sequence[int] | None = None) -> Tensor:
    """One PNG / JPEG file as a ``uint8`` tensor: (H, W) for ``mode="L"`` (grey), (3, H, W)
    for ``"RGB"``; resized (bilinear) to ``size = (H, W)`` when given."""
    Image = require_pillow()
    with Image.open(path) as img:
        img = img.convert(mode)
        if size is not None:
            height, width = (int(s) for s in size)
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        data = bytearray(img.tobytes())
        width, height = img.size
    pixels = torch.frombuffer(data, dtype=torch.uint8)
    if mode == "L":
        return pixels.reshape(height, width)
    return pixels.reshape(height, width, 3).permute(2, 0, 1).contiguous()


def read_image_folder(
    folder: PathLike,
    labels: str = "labels.csv",
    *,
    file_column: str = "file",
    mode: str = "L",
    size: Sequence[int] | None = None,
    targets: Mapping[str, str] | None = None,
    missing: Sequence[str] = ("",),
) -> list[Example]:
    """A folder of PNG / JPEG images and its labels file: ``labels`` (a CSV in ``folder``)
    with a header row ``file,label[,label2...]``, one image per row, ``file`` relative to
    ``folder``. ``targets`` maps task -> column (default: every column but ``file_column``
    under its own name); a cell in ``missing`` is a missing label. Images are read by
    :func:`load_image` (Pillow, the ``images`` extra) and must share one shape (``size``
    resizes them)."""
    import csv

    root = resolve_data_path(folder)
    table = root / labels
    if not table.is_file():
        raise DataError(
            str(table),
            f"no labels file in {root}",
            "add a CSV with a header row file,label[,label2...] or name it in options.labels",
        )
    with open(table, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        names = list(reader.fieldnames or [])
        if file_column not in names:
            raise OptionError(
                "options.file_column",
                f"{table.name} has no column {file_column!r} (columns: {', '.join(names)})",
                "name the column of image file names",
            )
        mapping = dict(targets) if targets else {c: c for c in names if c != file_column}
        for task, column in mapping.items():
            if column not in names:
                raise OptionError(
                    f"tasks.{task}",
                    f"column {column!r} is not in {table.name}",
                    f"use one of its columns: {', '.join(c for c in names if c != file_column)}",
                )
        rows = [(reader.line_num, row) for row in reader]
    out: list[Example] = []
    shape: tuple[int, ...] | None = None
    for line, row in rows:
        name = (row.get(file_column) or "").strip()
        path = root / name
        if not name or not path.is_file():
            raise DataError(
                f"{table} line {line}",
                f"image {name!r} not found in {root}",
                "give each image's file name relative to the folder",
            )
        try:
            image = load_image(path, mode, size)
        except OSError as err:  # Pillow's UnidentifiedImageError is an OSError
            raise DataError(
                str(path), f"not a readable image ({err})", "give PNG or JPEG"
            ) from None
        if shape is None:
            shape, first = tuple(image.shape), name
        elif tuple(image.shape) != shape:
            raise DataError(
                str(path),
                f"shape {tuple(image.shape)} differs from {first}'s {shape}",
                "give images of one size or options.size: [H, W] to resize them",
            )
        cells = {task: (row.get(column) or "").strip() for task, column in mapping.items()}
        out.append(
            Example(
                inputs={"image": image},
                targets={t: None if v in missing else v for t, v in cells.items()},
                id=name,
            )
        )
    return out
