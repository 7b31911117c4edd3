"""benchmarks/gpu.sh --dry-run: every GPU step at tiny scale on the CPU, records in one folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GAMES = REPO / ".." / "shared" / "data" / "rec" / "games"


@pytest.mark.slow
def test_the_gpu_script_runs_every_step_at_tiny_scale_and_keeps_its_records(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "records"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = {s["step"]: s for s in json.loads((out / "steps.json").read_text())}
    assert list(steps) == ["tiger", "effort", "ot", "agnews"]
    for name in ("tiger", "ot", "agnews"):
        assert steps[name]["status"] == "done", steps[name]
    assert steps["effort"]["status"] == ("done" if GAMES.is_dir() else "skipped")
    runs = sorted(p.parent.name for p in (out / "tiger-converged" / "runs").glob("*/result.json"))
    assert runs == ["method=dealrec,seed=0", "method=full,seed=0", "method=random,seed=0"]
    assert len(list((out / "agnews-zeroshot-5000" / "runs").glob("*/per_example.npz"))) == 5
    record = json.loads((out / "ot-speed.json").read_text())
    assert record["machine"]["cores"] and record["results"][0]["n"] == 2000


def test_the_gpu_script_refuses_an_unknown_flag():
    done = subprocess.run(["bash", "benchmarks/gpu.sh", "--budjet", "5"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument --budjet" in done.stderr
