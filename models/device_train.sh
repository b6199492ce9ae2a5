#!/bin/bash
# The training call made on the device (one H100) for the shipped model: a small sweep of four
# QAT runs sharing the GPU, the best by held-out loss is exported, tarred and verified with
# transformers. Needs models/.data from `train_tiny_bitnet.py prepare` (pass it with carry).
# Usage (from the repo root): OUT=/some/dir bash models/device_train.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
BUDGET=${BUDGET:-330}
mkdir -p "$OUT" /tmp/runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, tokenizers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'accelerate', accelerate.__version__)"
S=models/train_tiny_bitnet.py
run() { name=$1; shift
  python3 $S train --data models/.data --out /tmp/runs/$name --time-budget $BUDGET "$@" > "$OUT/$name.log" 2>&1 & }
run a --lr 2e-3 --steps 2500
run b --lr 4e-3 --steps 2500
run c --lr 3e-3 --steps 1200
run d --lr 3e-3 --steps 6000
wait
python3 - <<'PY' > "$OUT/summary.json"
import json, glob, os
rows = {}
for f in sorted(glob.glob("/tmp/runs/*/training_log.json")):
    rows[os.path.basename(os.path.dirname(f))] = json.load(open(f))
best = min(rows, key=lambda k: rows[k]["final_val_loss_fp32"])
open("/tmp/runs/BEST", "w").write(best)
print(json.dumps({"best": best, "runs": rows}, indent=1))
PY
BEST=$(cat /tmp/runs/BEST)
echo "best run: $BEST"
tar -C /tmp/runs -cf "$OUT/best.tar" "$BEST"
python3 $S verify --model /tmp/runs/$BEST --data models/.data > "$OUT/verify.log" 2>&1
tail -30 "$OUT/verify.log"
grep -h "trained\|final" "$OUT"/?.log
