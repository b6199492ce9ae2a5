#!/bin/sh
# QVAC Fabric's llama.cpp fork through Vulkan on the H200: llama-bench on
# TQ2_0 and llama-finetune-lora (LoRA r=16 on all 7 projections), for the
# side by side with vulkan_2b4t_h200.sh in the same session. Built and
# converted here as bench/peers.md says (none of its code is in this repo);
# there: qvac_h200.sh $OUT, carrying .device (.device/qvac/bin.tar.xz holds
# bin/llama-bench, bin/llama-finetune-lora and their libraries;
# .device/qvac/tq2_0.gguf.xz the model) and the Vulkan loader debs.
set -eu
cd "$(dirname "$0")/../.."
out=${1:-.}
tmp=${TMPDIR:-/tmp}/qvac
mkdir -p "$tmp"
for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .device/qvac/bin.tar.xz "$tmp"
export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$tmp/bin"
bench/gpu/unxz.py .device/qvac/tq2_0.gguf.xz "$tmp/m.gguf"
# Training text: the first 20 kB of demo/licenses.txt gives ~16 windows of
# 512 tokens (stride 256); the first 30 kB ~6 windows of 2048 (stride 1024).
head -c 20000 demo/licenses.txt > "$tmp/data512.txt"
head -c 30000 demo/licenses.txt > "$tmp/data2048.txt"
peak() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$tmp/mem" &
  smi=$!
  "$@" || echo "exit status $?"
  kill $smi
  echo "peak device memory $(sort -n "$tmp/mem" | tail -1) MiB"
}
modules=attn_q,attn_k,attn_v,attn_o,ffn_gate,ffn_up,ffn_down
{
  echo "idle device memory $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits) MiB"
  echo "== llama-bench TQ2_0, Vulkan: pp512, tg128 from an empty context and after 512 tokens"
  timeout 200 "$tmp/bin/llama-bench" -m "$tmp/m.gguf" -ngl 99 -p 512 -n 128 -r 3 -fa 0,1 || echo "exit status $?"
  timeout 120 "$tmp/bin/llama-bench" -m "$tmp/m.gguf" -ngl 99 -p 0 -n 128 -d 512 -r 3 -fa 0,1 || echo "exit status $?"
  # -fa off: ggml has no backward for flash attention (its default, auto,
  # aborts in ggml_build_backward_expand); its README's examples pass it.
  # Each training step is one window of -c tokens: -c 2048 -b 2048 is the
  # closest to our 4 x 512 (it has no batch of several sequences).
  # On lavapipe the run once died of heap corruption in its first step and
  # passed with --no-warmup: a failed run is retried so.
  for ctx in 512 2048; do
    for warmup in "" --no-warmup; do
      echo "== llama-finetune-lora -c $ctx -b $ctx -ub 512 -fa off $warmup, r=16, all 7 projections"
      peak timeout 170 python3 bench/gpu/stamp.py "$tmp/bin/llama-finetune-lora" -m "$tmp/m.gguf" \
        -f "$tmp/data$ctx.txt" -ngl 999 -c $ctx -b $ctx -ub 512 -fa off --lora-rank 16 --lora-alpha 32 \
        --lora-modules $modules --checkpoint-save-steps 0 $warmup --output-adapter "$tmp/adapter$ctx.gguf" \
        2>&1 | grep -v "^\[ *[0-9.]*\] *$" > "$tmp/ft$ctx.log"
      cp "$tmp/ft$ctx.log" "$out/qvac-finetune-c$ctx$warmup.log"
      grep -E "train:|val:|rror|failed|corrupt|peak|exit|Training split|ggml_vulkan|buffer size|saved" "$tmp/ft$ctx.log" | tail -40
      ! grep -q "LoRA adapter saved" "$tmp/ft$ctx.log" || break
    done
  done
} 2>&1 | tee "$out/qvac.txt"
