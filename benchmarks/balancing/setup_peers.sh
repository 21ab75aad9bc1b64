#!/usr/bin/env bash
# Creates benchmarks/.venv-peers: polytask (editable) beside the peer libraries the balancing
# benchmarks compare against — torchjd 0.18.0 (with its optional solvers) and LibMTL 1.1.5 —
# plus matplotlib for the toy plots. The project venv never gets these.
#
#   bash benchmarks/balancing/setup_peers.sh [PYTHON]     # PYTHON defaults to python3.11
#
# torch stays at the CPU build 2.13.0 (pinned by constraints.txt); the script fails if any
# install replaced it. LibMTL is installed with --no-deps: its declared dependency on
# torchvision would pull a CUDA torch. At import time LibMTL needs numpy and scipy (CAGrad)
# and one torchvision module, which the benchmark scripts stand in (see peers.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${1:-python3.11}"
VENV="$ROOT/benchmarks/.venv-peers"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt")

"${PIP[@]}" -e "$ROOT"
"${PIP[@]}" "torchjd[full]==0.18.0"
"${PIP[@]}" --no-deps "LibMTL==1.1.5"
"${PIP[@]}" numpy scipy matplotlib psutil

# torch must still be the CPU 2.13.0 wheel, and nothing may have brought torchvision (CUDA).
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import sys

torch_version = md.version("torch")
problems = []
if torch_version != "2.13.0+cpu":
    problems.append(f"torch is {torch_version}, expected 2.13.0+cpu")
for name in ("torchvision", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"):
    try:
        problems.append(f"{name} {md.version(name)} is installed (it must not be)")
    except md.PackageNotFoundError:
        pass
for name, want in (("torchjd", "0.18.0"), ("LibMTL", "1.1.5")):
    if md.version(name) != want:
        problems.append(f"{name} is {md.version(name)}, expected {want}")
if problems:
    sys.exit("setup_peers: " + "; ".join(problems))
print(f"benchmarks/.venv-peers ready: torch {torch_version}, torchjd {md.version('torchjd')}, "
      f"LibMTL {md.version('LibMTL')}, cvxpy {md.version('cvxpy')}, matplotlib {md.version('matplotlib')}")
EOF
