#!/bin/sh
# QVAC Fabric's llama.cpp fork through Vulkan on the H200: llama-bench on
# TQ2_0 and llama-finetune-lora (LoRA r=16 on all 7 projections), for the
# side by side with vulkan_2b4t_h200.sh in the same session. Built and
# converted here as bench/peers.md says (none of its code is in this repo);
# there: qvac_h200.sh $OUT, carrying .device/qvac (bin.tar.xz: bin/llama-bench,
# bin/llama-finetune-lora and their libraries; the models as *.gguf.xz) and
# .device/debs (the Vulkan loader). Two models, each run if carried:
#   tq2_0.gguf.xz         llama-quantize's defaults: TQ2_0, token_embd Q6_K.
#                         llama.cpp's bitnet graph has no output tensor and
#                         uses token_embd as the head, which stays in host
#                         memory (the input layer's buffer).
#   tq2_0-q8embd.gguf.xz  token_embd Q8_0, placed on the GPU with -ot (the
#                         peer at its best: Vulkan has no Q6_K OUT_PROD, so
#                         the Q6_K head's backward runs on the CPU).
set -eu
cd "$(dirname "$0")/../.."
out=${1:-.}
tmp=${TMPDIR:-/tmp}/qvac
mkdir -p "$tmp"
for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .device/qvac/bin.tar.xz "$tmp"
export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$tmp/bin"
# Training text: the first 20 kB of demo/licenses.txt gives 14 windows of
# 512 tokens (stride 256); the first 30 kB 4 windows of 2048 (stride 1024).
head -c 20000 demo/licenses.txt > "$tmp/data512.txt"
head -c 30000 demo/licenses.txt > "$tmp/data2048.txt"
. bench/gpu/peak.sh
modules=attn_q,attn_k,attn_v,attn_o,ffn_gate,ffn_up,ffn_down
run_model() {
  name=$1
  shift
  [ -f .device/qvac/$name.gguf.xz ] || return 0
  bench/gpu/unxz.py .device/qvac/$name.gguf.xz "$tmp/m.gguf"
  echo "== $name $*: llama-bench pp512 and tg128, then tg128 after 512 tokens"
  timeout 150 "$tmp/bin/llama-bench" -m "$tmp/m.gguf" -ngl 99 "$@" -p 512 -n 128 -r 3 -fa 0,1 || echo "exit status $?"
  timeout 60 "$tmp/bin/llama-bench" -m "$tmp/m.gguf" -ngl 99 "$@" -p 0 -n 128 -d 512 -r 3 -fa 1 || echo "exit status $?"
  # -fa off: ggml has no backward for flash attention (its default, auto,
  # aborts in ggml_build_backward_expand); its README's examples pass it.
  # Each training step is one window of -c tokens: -c 2048 -b 2048 is the
  # closest to our 4 x 512 (it has no batch of several sequences).
  # QVAC_BENCH_ONLY=1: llama-bench alone (a decode side by side).
  [ "${QVAC_BENCH_ONLY:-0}" = 1 ] && return 0
  for ctx in 512 2048; do
    echo "== $name $*: llama-finetune-lora -c $ctx -b $ctx -ub 512 -fa off, r=16, all 7 projections"
    peak timeout 150 python3 bench/gpu/stamp.py "$tmp/bin/llama-finetune-lora" -m "$tmp/m.gguf" "$@" \
      -f "$tmp/data$ctx.txt" -ngl 999 -c $ctx -b $ctx -ub 512 -fa off --lora-rank 16 --lora-alpha 32 \
      --lora-modules $modules --checkpoint-save-steps 0 --output-adapter "$tmp/adapter$ctx.gguf" \
      2>&1 | grep -v "^\[ *[0-9.]*\] *$" > "$tmp/ft.log"
    cp "$tmp/ft.log" "$out/qvac-$name-c$ctx.log"
    grep -E "train:|val:|rror|failed|corrupt|peak|exit|Training split|ggml_vulkan|buffer size|saved" "$tmp/ft.log" | tail -40
  done
}
{
  echo "idle device memory $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits) MiB"
  run_model tq2_0-q8embd -ot 'token_embd\.weight=Vulkan0'
  run_model tq2_0
} 2>&1 | tee "$out/qvac.txt"
