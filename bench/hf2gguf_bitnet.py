#!/usr/bin/env python3
"""Converts a BitNet-b1.58-2B-4T-format checkpoint to an F16 GGUF for the
llama.cpp-family peers (bench/peers.md), without torch.

The peers' own converters import torch (not installed here), so this one
uses numpy and the peer's own gguf-py, and writes what llama.cpp's
convert_hf_to_gguf.py BitnetModel writes for this checkpoint: ternary
weights unpacked (w[i*R + r] = ((p[r] >> 2i) & 3) - 1) times weight_scale
in F16, norms in F32, the tied embedding in F16 (no output.weight), and the
Llama 3 BPE tokenizer from tokenizer.json. llama-quantize then makes TQ2_0.

  python3 bench/hf2gguf_bitnet.py MODEL_DIR OUT.gguf --gguf-py PEER/gguf-py
"""
import argparse
import json
import mmap
import os
import sys

import numpy as np

HF_TO_GGUF = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.attn_sub_norm": "attn_sub_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
}


def read_safetensors(path):
    """name -> float32 or uint8 array (bf16 widened to f32)."""
    f = open(path, "rb")
    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        raw = np.frombuffer(buf, dtype=np.uint8, count=b - a, offset=8 + n + a)
        dtype = info["dtype"]
        if dtype == "BF16":
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F32":
            arr = raw.view(np.float32)
        elif dtype == "F16":
            arr = raw.view(np.float16).astype(np.float32)
        elif dtype == "U8":
            arr = raw
        else:
            sys.exit("%s: tensor %s: unsupported dtype %s" % (path, name, dtype))
        out[name] = arr.reshape(info["shape"])
    return out


def unpack_ternary(p, scale):
    rows = p.shape[0]
    w = np.empty((4 * rows, p.shape[1]), dtype=np.float16)
    for i in range(4):
        code = (p >> (2 * i)) & 3
        w[i * rows:(i + 1) * rows] = np.where(code == 3, 1, code).astype(np.float32) - 1.0
    return (w.astype(np.float32) * scale).astype(np.float16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--gguf-py", required=True, help="the peer's gguf-py folder")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    import gguf

    cfg = json.load(open(os.path.join(args.model_dir, "config.json")))
    t = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    tok = json.load(open(os.path.join(args.model_dir, "tokenizer.json"), encoding="utf-8"))

    V, D = cfg["vocab_size"], cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    w = gguf.GGUFWriter(args.out, "bitnet")
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(D)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_dimension_count(D // heads)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 500000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(1.0)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    # Tokenizer: Llama 3 BPE, the ids of tokenizer.json, gaps padded as llama.cpp does.
    tokens = ["[PAD%d]" % i for i in range(V)]
    types = [gguf.TokenType.UNUSED] * V
    for piece, i in tok["model"]["vocab"].items():
        tokens[i], types[i] = piece, gguf.TokenType.NORMAL
    for added in tok.get("added_tokens", []):
        i = added["id"]
        tokens[i] = added["content"]
        types[i] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.get("bos_token_id", 128000))
    eos = cfg.get("eos_token_id", 128001)
    w.add_eos_token_id(eos[0] if isinstance(eos, list) else eos)

    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"].astype(np.float16))
    w.add_tensor("output_norm.weight", t["model.norm.weight"].astype(np.float32))
    for layer in range(cfg["num_hidden_layers"]):
        for hf, gg in HF_TO_GGUF.items():
            base = "model.layers.%d.%s." % (layer, hf)
            name = "blk.%d.%s.weight" % (layer, gg)
            if base + "weight_scale" in t:
                scale = float(t[base + "weight_scale"].reshape(-1)[0])
                w.add_tensor(name, unpack_ternary(t[base + "weight"], scale))
            else:
                w.add_tensor(name, t[base + "weight"].astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
