#!/usr/bin/env python3
"""Writes a BitNet-b1.58-2B-4T-shaped checkpoint with random weights.

Same shapes and format as microsoft/bitnet-b1.58-2B-4T (bitnet.md): packed
uint8 [out/4, in] ternary projections with a bf16 weight_scale (gamma),
bf16 embeddings and norms, tied head, hidden 2560, intermediate 6912,
30 layers, 20 heads / 5 kv heads, vocab 128256, plus the Llama 3
tokenizer.json from test/data. For benchmarks only: the text is noise.

  python3 bench/make_bitnet_2b4t.py OUT_DIR [--layers N]

--hidden/--intermediate/--heads/--kv-heads shrink the layers (tests use a
1-layer model whose 128256-row embedding still exceeds 128 MiB).
"""
import argparse
import gzip
import json
import os
import shutil

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def bf16(a):
    """float32 -> bf16 bits (round to nearest even), as uint16 viewed by safetensors."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def packed(rng, out, inp, period=0):
    rows = min(period, out // 4) if period else out // 4
    codes = rng.integers(0, 3, size=(4, rows, inp), dtype=np.uint8)
    p = (codes[0] | (codes[1] << 2) | (codes[2] << 4) | (codes[3] << 6)).astype(np.uint8)
    return np.resize(p, (out // 4, inp)) if period else p


def embedding(rng, V, D, period=0):
    """Random rows; with a period, rows repeat every `period` rows, each made
    unique by one element (so the file compresses and logits do not tie)."""
    if not period:
        return bf16(rng.standard_normal((V, D), dtype=np.float32) * 0.02)
    e = np.resize(rng.standard_normal((period, D), dtype=np.float32) * 0.02, (V, D))
    v = np.arange(V)
    e[v, v % D] = 0.03 + 0.02 * ((v // D) % 97) / 97
    return bf16(e)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=2560)
    ap.add_argument("--intermediate", type=int, default=6912)
    ap.add_argument("--heads", type=int, default=20)
    ap.add_argument("--kv-heads", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--f32", action="store_true",
                    help="float32 embeddings and norms (bf16 inputs make int8 rounding ties "
                         "likely, which any 1-ulp difference flips; tests comparing devices "
                         "want none)")
    ap.add_argument("--compressible", action="store_true",
                    help="weights that repeat with a short period (same shapes and cost; "
                         "the module gzips small enough to copy to a remote GPU machine)")
    args = ap.parse_args()
    D, I, H, KV, V = args.hidden, args.intermediate, args.heads, args.kv_heads, args.vocab
    hd = D // H
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    config = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet",
        "hidden_size": D, "intermediate_size": I, "num_hidden_layers": args.layers,
        "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": V,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "relu2",
        "rope_theta": 500000.0, "tie_word_embeddings": True,
        "bos_token_id": 128000, "eos_token_id": 128001,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},
    }
    json.dump(config, open(os.path.join(args.out, "config.json"), "w"), indent=2)
    t = {}
    global bf16
    if args.f32:
        bf16 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    period = 4 if args.compressible else 0  # within gzip's 32 KiB window
    t["model.embed_tokens.weight"] = embedding(rng, V, D, period)
    t["model.norm.weight"] = bf16(1 + 0.1 * rng.standard_normal(D, dtype=np.float32))
    shapes = {"self_attn.q_proj": (D, D), "self_attn.k_proj": (KV * hd, D),
              "self_attn.v_proj": (KV * hd, D), "self_attn.o_proj": (D, D),
              "mlp.gate_proj": (I, D), "mlp.up_proj": (I, D), "mlp.down_proj": (D, I)}
    for l in range(args.layers):
        p = "model.layers.%d." % l
        for name, (o, i) in shapes.items():
            t[p + name + ".weight"] = packed(rng, o, i, 16 if args.compressible else 0)
            t[p + name + ".weight_scale"] = bf16(np.array([rng.uniform(0.5, 3.0)], np.float32))
        for n, d in [("input_layernorm", D), ("post_attention_layernorm", D),
                     ("self_attn.attn_sub_norm", D), ("mlp.ffn_sub_norm", I)]:
            t[p + n + ".weight"] = bf16(1 + 0.1 * rng.standard_normal(d, dtype=np.float32))
    # Written by hand: safetensors.numpy has no bf16 dtype.
    header, offset = {}, 0
    for k, a in t.items():
        dtype = {np.uint16: "BF16", np.float32: "F32", np.uint8: "U8"}[a.dtype.type]
        header[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for a in t.values():
            f.write(np.ascontiguousarray(a).tobytes())
    with gzip.open(os.path.join(HERE, "..", "test", "data", "llama3-tokenizer", "tokenizer.json.gz")) as src, \
            open(os.path.join(args.out, "tokenizer.json"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
