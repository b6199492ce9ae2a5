#!/bin/sh
# The Vulkan path on the H200 at the BitNet-2B-4T shape, and training on a
# model whose embedding exceeds 128 MiB with the driver capped at 128 MiB.
# Modules are compiled here from --compressible random checkpoints (weights
# that repeat with a short period: same shapes and cost, and xz makes the
# 1.2 GB modules small enough to copy: ~11 MB each), then run there:
#
#   here:  bench/gpu/vulkan_goldens_h200.sh prepare   (the Vulkan loader debs)
#          bench/gpu/vulkan_2b4t_h200.sh prepare
#   there: bench/gpu/vulkan_2b4t_h200.sh run $OUT
#          (carry build/bin/tlc-run build/lib/libtlcrt.so
#           build/lib/libtlctrain.so .device)
set -eu
cd "$(dirname "$0")/../.."
tmp=${TMPDIR:-/tmp}/tlc-2b4t
case "${1:-}" in
prepare)
  rm -rf "$tmp" && mkdir -p "$tmp" .device/2b4t
  python3 bench/make_bitnet_2b4t.py "$tmp/2b4t" --compressible
  for batch in 1 4; do
    build/bin/tlc compile "$tmp/2b4t" --target vulkan-spirv --train \
      --lora-rank 16 --lora-alpha 32 --seq-len 512 --batch $batch \
      --max-seq-len 1024 --prefill-chunk 256 -o "$tmp/train$batch.tlm"
    xz -6 -T2 -c "$tmp/train$batch.tlm" > .device/2b4t/train$batch.tlm.xz
  done
  # Inference alone (no adapters), for the side-by-side with llama-bench;
  # infer-v11 without the integer dot product (Vulkan 1.1 devices).
  for m in infer:vulkan-spirv infer-v11:vulkan-spirv:no-integer-dot; do
    build/bin/tlc compile "$tmp/2b4t" --target "${m#*:}" --max-seq-len 1024 \
      --prefill-chunk 256 -o "$tmp/${m%%:*}.tlm"
    xz -6 -T2 -c "$tmp/${m%%:*}.tlm" > ".device/2b4t/${m%%:*}.tlm.xz"
  done
  # One layer, hidden 1024: the 128256 x 1024 bf16 embedding is 250.5 MiB.
  python3 bench/make_bitnet_2b4t.py "$tmp/big" --layers 1 --hidden 1024 \
    --intermediate 2816 --heads 8 --kv-heads 2 --compressible --f32
  build/bin/tlc compile "$tmp/big" --target x86-64,vulkan-spirv --train \
    --optimizer sgd --lora-rank 4 --lora-alpha 8 --seq-len 16 --batch 1 \
    --max-seq-len 64 --prefill-chunk 16 -o "$tmp/big.tlm"
  xz -6 -T2 -c "$tmp/big.tlm" > .device/2b4t/big.tlm.xz
  python3 -c "import numpy as np; np.save('.device/2b4t/big.npy', np.random.default_rng(2).integers(0, 128256, size=(4, 16)).astype(np.int32))"
  rm -rf "$tmp"
  ;;
run)
  out=${2:-.}
  for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
  export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$PWD/build/lib"
  mkdir -p "$tmp"
  # Modules not carried (a call carries at most 64 MiB) are skipped.
  for f in .device/2b4t/*.tlm.xz; do
    [ ! -f "$f" ] || bench/gpu/unxz.py "$f" "$tmp/$(basename "$f" .xz)"
  done
  . bench/gpu/peak.sh
  {
    echo "idle device memory $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits) MiB"
    if [ -f "$tmp/big.tlm" ]; then
    echo "== embedding over 128 MiB, TLC_VULKAN_MAX_BUFFER_RANGE=134217728"
    export TLC_VULKAN_MAX_BUFFER_RANGE=134217728
    ids=16,78123,1002,99999,5,128255,64000,31,4242,120001,7,500
    build/bin/tlc-run logits "$tmp/big.tlm" --device gpu --ids $ids -o "$tmp/big-gpu.npy"
    build/bin/tlc-run logits "$tmp/big.tlm" --device cpu --ids $ids -o "$tmp/big-cpu.npy"
    python3 test/e2e/check_logits.py "$tmp/big-gpu.npy" "$tmp/big-cpu.npy" || true
    for device in gpu cpu; do
      build/bin/tlc-run train "$tmp/big.tlm" --device $device --data .device/2b4t/big.npy \
        --steps 2 --lr 0.5 --seed 3 --shuffle false --out "$tmp/big-$device" \
        --log "$tmp/big-$device.jsonl" > /dev/null
      cat "$tmp/big-$device.jsonl"
    done
    python3 - "$tmp/big-gpu" "$tmp/big-cpu" <<'EOF'
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = (load_file(d + "/adapter_model.safetensors") for d in sys.argv[1:3])
errors = {k: np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-30) for k in b}
for k, e in sorted(errors.items()):
    print("  %s: relative L2 %.2e (norm %.3e)" % (k.split("layers.0.")[-1], e, np.linalg.norm(b[k])))
worst = max(errors.values())
print("adapters after 2 SGD steps, GPU vs CPU: worst relative L2 %.2e %s" %
      (worst, "PASS" if worst <= 1e-3 else "FAIL"))
EOF
    unset TLC_VULKAN_MAX_BUFFER_RANGE
    fi
    echo "== 2B-4T shape: inference (prefill 512 in chunks of 256, decode 128)"
    for m in $(cd "$tmp" && ls infer*.tlm | sed 's/[.]tlm$//') train1; do
      [ -f "$tmp/$m.tlm" ] || continue
      echo "-- $m"
      timeout 120 build/bin/tlc-run bench "$tmp/$m.tlm" --device gpu --prompt-len 512 \
        --gen-len 128 || echo "exit status $?"
    done
    echo "== 2B-4T shape: LoRA r=16 training, all 7 projections"
    for batch in 1 4; do
      [ -f "$tmp/train$batch.tlm" ] || continue
      peak timeout 200 build/bin/tlc-run train "$tmp/train$batch.tlm" --device gpu \
        --data demo/licenses.txt --steps $((4 / batch)) --lr 1e-4 --seed 1 --out "$tmp/adapter$batch" --log "$out/train$batch.jsonl"
    done
  } 2>&1 | tee "$out/2b4t.txt"
  ;;
*)
  echo "usage: $0 prepare | run OUT" >&2
  exit 2
  ;;
esac
