#!/usr/bin/env bash
# AutoGluon for the quality benchmark, in a virtualenv of its own (benchmarks/.venv-autogluon):
# AutoGluon 1.6 pins pandas < 2.4 and cannot share the project's venv.
#
# What the default preset (medium_quality, hyperparameters "default") fits: LightGBM, CatBoost,
# XGBoost, random forest, extra trees and two neural networks, NN_TORCH (torch) and FASTAI
# (fastai, which imports torchvision). All but FASTAI are installed: PyPI's torchvision is
# built against PyPI's CUDA torch and fails to import beside the CPU build ("operator
# torchvision::nms does not exist"), so AutoGluon skips FASTAI (one log line, no time lost).
# torch is the CPU build: PyPI's torch wheel pulls several GB of CUDA libraries. pip takes
# torch==2.13.0+cpu from a folder of wheels when one is configured (PIP_FIND_LINKS; this
# machine has it in /opt/wheels); elsewhere set TORCH_INDEX_URL to a CPU index of PyTorch.
# Versions are pinned in autogluon-constraints.txt (a pip freeze of a working install).
#
#   bash benchmarks/peers/setup_autogluon.sh          # or: make bench-autogluon
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${AUTOGLUON_VENV:-$HERE/../.venv-autogluon}"
PYTHON="${PYTHON:-python3.11}"
CONSTRAINTS="$HERE/autogluon-constraints.txt"
started=$(date +%s)

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    "${PIP[@]}" --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
else
    "${PIP[@]}" "torch==2.13.0"
fi
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if "+cpu" in torch.__version__ else 1)'; then
    echo "torch in $VENV is not the CPU build ($("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))" >&2
    echo "set PIP_FIND_LINKS to a folder holding torch-2.13.0+cpu or TORCH_INDEX_URL to a CPU index" >&2
    exit 1
fi
"${PIP[@]}" -c "$CONSTRAINTS" "autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3"
"$VENV/bin/python" -c 'import autogluon.tabular, lightgbm, catboost, xgboost, torch
print("autogluon.tabular", autogluon.tabular.__version__, "torch", torch.__version__)'
echo "$VENV: $(du -sh "$VENV" | cut -f1), installed in $(( $(date +%s) - started )) s"
