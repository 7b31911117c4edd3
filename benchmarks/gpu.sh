#!/usr/bin/env bash
# The measurements that need a GPU, in order of value, within one time budget (default 12 minutes),
# on one H100 with nothing prepared beyond `bash scripts/setup.sh` (and ../shared/data beside the checkout).
#
#   bash benchmarks/gpu.sh                 # writes benchmarks/results/gpu-YYYYMMDD/
#   bash benchmarks/gpu.sh --dry-run       # the same steps at tiny scale on the CPU (under 3 minutes)
#   bash benchmarks/gpu.sh --budget 600 --out DIR --only tiger,ot
#
# Steps (each gets at most its share of what is left, and is stopped with SIGTERM when its time is up;
# every bench is resumable and keeps its finished runs, so a stopped step keeps what it finished):
#   1. tiger   DEALRec on TIGER, Games, trained to convergence: `full`, random and DEALRec, seed 0 — the
#              protocol with headroom that the CPU study (docs/results/tiger-stable.md) could not afford.
#              Pre-registered: lr 1e-3, 100 warm-up steps, cosine decay to 0 at 6,000 steps, EMA 0.99,
#              validation loss of every validation user every 200 steps, patience 5, the same for every
#              pick; comparisons DEALRec − random and full − random on R@10.
#   2. effort  DEALRec's effort against the authors' batch-size-1 procedure on CUDA, float16 as they ran it.
#   3. ot      our Sinkhorn on the GPU at N = 200k and 1M, M = 5k, d = 384 (synthetic), with the semi-dual.
#   4. agnews  GOT-D's zero-shot AG News warm-up at a budget of thousands (5,000), one seed.
# Records: OUT/<step>/ (a packed bench, `benchmarks/bench_runs.py pack`) or OUT/<step>.json (`--record`),
# and OUT/steps.json: each step's status, exit code and seconds. A step that fails does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET=720
DRY=0
OUT=""
ONLY="tiger,effort,ot,agnews"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --budget) BUDGET=$2; shift ;;
    --out) OUT=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (expected --dry-run, --budget S, --out DIR, --only STEPS)" >&2; exit 2 ;;
  esac
  shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu.sh: --budget must be whole seconds, got $BUDGET" >&2; exit 2 ;; esac

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SHARED=${TUNESIFT_SHARED:-../shared}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunesift-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -z "$OUT" ]; then
  if [ $DRY = 1 ]; then OUT=$WORK/records; else OUT=benchmarks/results/gpu-$(date -u +%Y%m%d); fi
fi
mkdir -p "$OUT"
START=$(date +%s)
STEPS_JSON=$OUT/steps.json
echo "[]" > "$STEPS_JSON"

if [ $DRY = 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi
export TUNESIFT_TEXT_DATA=${TUNESIFT_TEXT_DATA:-$SHARED/data/text}

record_step() {  # name status rc seconds
  "$PY" - "$STEPS_JSON" "$@" <<'EOF'
import json, sys
path, name, status, rc, seconds = sys.argv[1:]
steps = json.load(open(path))
steps.append({"step": name, "status": status, "exit_code": int(rc), "seconds": float(seconds)})
json.dump(steps, open(path + ".tmp", "w"), indent=2)
import os; os.replace(path + ".tmp", path)
EOF
}

# run_step NAME SHARE_OF_REMAINING_PERCENT COMMAND...: at most that share of the time left, SIGTERM after it
run_step() {
  local name=$1 share=$2; shift 2
  case ",$ONLY," in *",$name,"*) ;; *) return 0 ;; esac
  local now left cap t0 rc status
  now=$(date +%s); left=$(( BUDGET - (now - START) ))
  if [ "$left" -le 10 ]; then
    echo "gpu.sh: $name skipped, no time left" >&2
    record_step "$name" skipped 0 0
    return 0
  fi
  cap=$(( left * share / 100 )); [ "$cap" -lt 10 ] && cap=10
  echo "gpu.sh: $name (at most ${cap} s of ${left} s left)" >&2
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=20 "$cap" "$@"
  rc=$?
  case $rc in 0) status=done ;; 124|143) status=stopped ;; *) status=failed ;; esac
  record_step "$name" "$status" "$rc" $(( $(date +%s) - t0 ))
  echo "gpu.sh: $name $status (exit $rc) after $(( $(date +%s) - t0 )) s" >&2
}

pack() {  # a bench folder's finished runs into OUT/NAME (nothing when none finished)
  if ls "$1"/runs/*/result.json >/dev/null 2>&1; then
    "$PY" benchmarks/bench_runs.py pack "$1" "$OUT/$2" || echo "gpu.sh: could not pack $1" >&2
  fi
}

# -- inputs ----------------------------------------------------------------------------------------
if [ $DRY = 1 ]; then
  # a synthetic interaction table and item embeddings, a tiny causal LM, the tiny warm-up task
  "$PY" - "$WORK" <<'EOF'
import csv, sys
from pathlib import Path
import numpy as np
work = Path(sys.argv[1]); rng = np.random.default_rng(0)
with open(work / "interactions.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["user", "item", "timestamp", "title"])
    for u in range(80):
        for t in range(int(rng.integers(4, 9))):
            i = int(rng.integers(0, 30)); w.writerow([f"u{u}", f"i{i}", 1000 * u + t, f"Game {i}"])
np.save(work / "items.npy", rng.normal(size=(30, 16)).astype(np.float32))
from tunesift.finetune.tiny import build_tiny_causal_lm
build_tiny_causal_lm([f"Game {i} Edition for the user" for i in range(40)] * 3, work / "lm", seed=0,
                     vocab_size=300, hidden_size=32, num_layers=2, num_heads=2)
EOF
  REC_DATA=$WORK/interactions.csv
  TIGER_SCALE=(--scale tiny --tiger-item-embeddings "$WORK/items.npy")
  TIGER_RECIPE=(--tiger-max-steps 20 --tiger-eval-every-steps 5)
  EFFORT=(--stages effort --users 4 --llm "$WORK/lm" --data "$SHARED/data/rec/games")
  OT=(--synthetic 2000 --m 200 --solvers ours,semidual --device cpu)
  AGNEWS=(--scale tiny --eval zero-shot --budgets 100 --seeds 1)
else
  REC_DATA=$SHARED/data/rec/games
  TIGER_SCALE=(--scale gpu)
  TIGER_RECIPE=(--tiger-max-steps 6000 --tiger-eval-every-steps 200)
  EFFORT=(--stages effort --users 256 --dtype float16 --device cuda --data "$SHARED/data/rec/games")
  OT=(--synthetic 200000 1000000 --m 5000 --solvers ours,ours-stored,semidual --device cuda --our-block-size 32768)
  "$PY" benchmarks/text_pool.py --out "$WORK/textpool" --shared "$SHARED" >/dev/null
  AGNEWS=(--scale gpu --eval zero-shot --task ag_news --pool "$WORK/textpool/pool.jsonl" --budgets 5000 --seeds 1)
fi

# -- 1. TIGER to convergence --------------------------------------------------------------------------
run_step tiger 45 "$PY" -m tunesift bench rec --backbone tiger "${TIGER_SCALE[@]}" --data "$REC_DATA" \
  --methods full,random,dealrec --seeds 1 --device $DEVICE --no-progress --out "$WORK/tiger" \
  --tiger-lr 1e-3 --tiger-warmup-steps 100 --tiger-schedule cosine "${TIGER_RECIPE[@]}" --tiger-ema 0.99 \
  --tiger-select-on loss --tiger-patience 5 --tiger-valid-users all
pack "$WORK/tiger" tiger-converged

# -- 2. effort speed on CUDA --------------------------------------------------------------------------
if [ $DRY = 1 ] && [ ! -d "$SHARED/data/rec/games" ]; then
  echo "gpu.sh: effort skipped in the dry run: no $SHARED/data/rec/games" >&2; record_step effort skipped 0 0
else
  run_step effort 25 "$PY" benchmarks/dealrec_speed.py "${EFFORT[@]}" --record "$OUT/effort-speed.json"
fi

# -- 3. OT speed on the GPU -----------------------------------------------------------------------------
run_step ot 35 "$PY" benchmarks/ot_speed.py "${OT[@]}" --record "$OUT/ot-speed.json"

# -- 4. GOT-D zero-shot AG News at a budget of thousands -------------------------------------------
run_step agnews 100 "$PY" -m tunesift bench gotd "${AGNEWS[@]}" --methods none,random,gotd,dsir,knn \
  --device $DEVICE --no-progress --out "$WORK/agnews"
pack "$WORK/agnews" agnews-zeroshot-5000

"$PY" - "$STEPS_JSON" "$OUT" <<'EOF'
import json, sys
steps = json.load(open(sys.argv[1]))
print(f"gpu.sh: records in {sys.argv[2]}")
for s in steps:
    print(f"  {s['step']:8s} {s['status']:8s} exit {s['exit_code']:3d}  {s['seconds']:6.0f} s")
EOF
