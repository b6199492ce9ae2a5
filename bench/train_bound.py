#!/usr/bin/env python3
"""Compute bound of one LoRA train_step on this CPU (tokens/s).

Counts the work of tlc's step for a BitNet config: ternary products in int8
(forward, plus the recomputed forward with --recompute) and in float32 (the
backward dX = dY W_t), the fused cross entropy over the LM head (forward,
then logits again and dX in the backward: 3 products), causal attention
(forward, recompute, backward ~2x) and the LoRA branches; divides by the
peaks measured by bench/kernels/bench_fma.c (f32 FMA, int8 vpdpbusd).
Usage: train_bound.py CONFIG.json --seq-len 512 --rank 16 --f32-gflops G
       --int8-gops G [--recompute]
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--f32-gflops", type=float, required=True)
    ap.add_argument("--int8-gops", type=float, required=True)
    ap.add_argument("--recompute", action="store_true")
    a = ap.parse_args()
    c = json.load(open(a.config))
    D, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or D // c["num_attention_heads"]
    H, KVH, T = c["num_attention_heads"], c["num_key_value_heads"], a.seq_len
    shapes = [(H * hd, D), (KVH * hd, D), (KVH * hd, D), (D, H * hd), (I, D), (I, D), (D, I)]
    ternary = L * sum(o * i for o, i in shapes)
    lora = L * sum(a.rank * (o + i) for o, i in shapes)
    fwd_passes = 2 if a.recompute else 1
    int8 = fwd_passes * 2 * ternary * T
    f32 = 2 * ternary * T                      # backward product
    f32 += 3 * 2 * V * D * T                   # cross entropy: forward, logits again, dX
    attn = L * 2 * 2 * (T * T / 2) * H * hd    # QK^T and PV, causal
    f32 += (fwd_passes + 2) * attn
    f32 += (fwd_passes + 3) * 2 * lora * T
    seconds = f32 / (a.f32_gflops * 1e9) + int8 / (a.int8_gops * 1e9)
    print(json.dumps({"tokens": T, "f32_tflop": round(f32 / 1e12, 3), "int8_top": round(int8 / 1e12, 3),
                      "bound_seconds_per_step": round(seconds, 2),
                      "bound_tokens_per_s": round(T / seconds, 1)}))


if __name__ == "__main__":
    main()
