#!/usr/bin/env bash
# Downloads into benchmarks/gpu/wheels/ the wheels that a GPU machine with its own torch but
# without our virtualenv lacks, for CPython 3.12 on manylinux x86_64 (run it where pip reaches
# a package index; the GPU machine has no internet). benchmarks/gpu/check.sh installs them
# there with `pip install --no-index --no-deps --target`.
#
#   bash benchmarks/gpu/fetch_wheels.sh [PYTHON]     # PYTHON (with pip) defaults to .venv/bin/python
#
# What the GPU machine has (torch 2.11+cu130, numpy, scipy, pyyaml, typer, click, rich,
# safetensors, scikit-learn, transformers, tokenizers, pytest) is not fetched. Fetched:
# * polytask's own dependencies it lacks: pydantic, pydantic-core, annotated-types,
#   typing-inspection (and typing-extensions, which pydantic-core 2.50 needs at >= 4.16: the
#   machine's may be older), seqeval (no wheel on PyPI: built here, pure Python);
# * torchjd 0.18.0 for the step-cost table, with what its aggregators import: qpsolvers +
#   quadprog (UPGrad, DualProj: torchjd's default projector), cvxpy + clarabel (CAGrad),
#   cvxpy + ecos (Nash-MTL); FairGrad needs scipy (present). cvxpy is installed without its
#   declared solvers osqp and scs (scs alone is a 43 MB wheel): cvxpy imports and solves
#   without them (torchjd names ECOS and CLARABEL explicitly).
# Versions are those of the project's .venv where it has the package.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${1:-$ROOT/.venv/bin/python}"
DEST="$ROOT/benchmarks/gpu/wheels"
mkdir -p "$DEST"

PINS=(
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    torchjd==0.18.0
    qpsolvers==4.13.0
    quadprog==0.1.14
    cvxpy==1.7.5
    clarabel==0.11.1
    ecos==2.0.14
)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PINS[@]}"
# seqeval 1.2.2 is an sdist only: build its (pure-Python) wheel here
if ! ls "$DEST"/seqeval-1.2.2-*.whl >/dev/null 2>&1; then
    "$PY" -m pip wheel --quiet --no-deps seqeval==1.2.2 -w "$DEST"
fi

# every wheel must install on CPython 3.12 / x86_64 and name no dependency that is neither
# here nor on the GPU machine
"$PY" - "$DEST" "$ROOT" <<'PY'
import re
import subprocess
import sys
import zipfile
from pathlib import Path

dest = Path(sys.argv[1])
on_gpu = {"torch", "numpy", "scipy", "scikit-learn", "pyyaml", "typer", "click", "rich",
          "safetensors", "transformers", "tokenizers"}
# declared but not needed at run time (see the header): cvxpy's other solvers and helpers
not_needed = {"osqp", "scs", "highspy", "qdldl", "sparsediffpy", "cffi"}
wheels = sorted(dest.glob("*.whl"))
names = {re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower() for w in wheels}
problems = []
for w in wheels:
    tags = w.name[:-4].split("-")[-3:]
    if not (tags[0] in ("py3", "py2.py3", "cp312", "cp39") and tags[2].endswith(("any", "x86_64"))):
        problems.append(f"{w.name}: not for CPython 3.12 / x86_64")
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:") or "extra ==" in line:
                continue
            req = line.split(":", 1)[1].strip()
            if "python_version < " in req:
                continue
            dep = re.sub(r"[-_.]+", "-", re.split(r"[\s;<>=!~\[(]", req)[0]).lower()
            if dep not in names | on_gpu | not_needed:
                problems.append(f"{w.name} needs {dep}, which is neither here nor on the GPU")
total = sum(w.stat().st_size for w in wheels)
for w in wheels:
    print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
print(f"{total / 2**20:7.2f} MiB  in {len(wheels)} wheels ({dest})")
# what travels to the GPU machine: the tree (tracked and untracked files git does not
# ignore) and the wheels, under the device tool's 64 MiB
root = Path(sys.argv[2])
listed = subprocess.run(
    ["git", "ls-files", "-co", "--exclude-standard", "-z"],
    cwd=root, capture_output=True, text=True, check=True,
).stdout.split("\0")
tree = sum((root / f).stat().st_size for f in listed if f and (root / f).is_file())
both = (tree + total) / 2**20
print(f"{both:7.2f} MiB  the tree ({tree / 2**20:.2f} MiB) and the wheels together (limit 64)")
if both > 64:
    problems.append(f"the tree and the wheels come to {both:.1f} MiB, over the 64 MiB carried")
if problems:
    sys.exit("fetch_wheels: " + "; ".join(problems))
PY
