#!/usr/bin/env python3
"""Make small random BitNet b1.58 checkpoints (Hugging Face format) and golden outputs.

Each case is written to OUT/<name>/:
  config.json, *.safetensors (+ model.safetensors.index.json when sharded)
  input_ids.npy   int32 [T]          seeded random token ids
  logits.npy      float32 [T, vocab] transformers' BitNetForCausalLM logits at every position
  generate.json   {"prompt_ids": [...], "new_ids": [16 greedy ids]}
  meta.json       versions, the exact config written, load checks, margins

The goldens are computed by transformers' own BitNetForCausalLM, loaded with from_pretrained
from the written folder, in float32 on CPU (no TF32, torch.compile disabled so the eager code
of transformers/integrations/bitnet.py runs).  Every case is also checked against an
independent numpy implementation of /work/shared/notes/bitnet.md (docs: test/e2e/goldens/README.md).

Usage (needs torch + transformers; made on the device machine with transformers 5.17):
    python3 test/e2e/make_goldens.py --out OUTDIR [--only NAME ...]
Deterministic: every random draw comes from a numpy Generator seeded per case.
"""
import os

# Before torch is imported: CPU only, and no torch.compile (transformers' bitnet integration
# decorates unpack_weights/activation_quant/WeightQuant with @torch.compile; eager is the same math).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TORCHDYNAMO_DISABLE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import copy
import json
import logging
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import BitNetForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
torch.use_deterministic_algorithms(True)

T = 12               # prompt / logits length
NEW_TOKENS = 16      # greedy tokens for generate.json
MIN_MARGIN = 0.1     # required top1 - top2 logit gap at every checked position
MIN_DISTINCT = 6     # greedy continuation must not be a degenerate repeat (and must not contain EOS)
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

BASE = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "hidden_act": "relu2",
    "max_position_embeddings": 256,
    "initializer_range": 0.02,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_cache": True,
    "model_type": "bitnet",
}

# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
CASES = [
    dict(
        name="gqa-autobitlinear-tied",
        seed=101,
        desc="offline packed uint8 [out/4,in] + bf16 weight_scale[1] that MULTIPLIES (=gamma), "
             "linear_class autobitlinear; GQA 4 heads / 2 kv heads; tied embeddings (no lm_head.weight); "
             "transformers-5 config (rope_parameters, dtype); bf16 embeddings/norms; rope_theta 5e5, eps 1e-5",
        config={
            "architectures": ["BitNetForCausalLM"],
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
            "tie_word_embeddings": True,
            "dtype": "bfloat16",
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                    "quantization_mode": "offline"},
            "transformers_version": "5.17.0",
        },
        fmt="packed", scale_mode="multiply", float_dtype=torch.bfloat16, shards=1,
    ),
    dict(
        name="mha-bitlinear-untied",
        seed=202,
        desc="offline packed uint8 + fp16 weight_scale[1] that DIVIDES (=1/gamma), linear_class bitlinear; "
             "MHA (4 heads = 4 kv heads); untied fp16 lm_head; transformers-4 config (rope_theta top level, "
             "torch_dtype); fp16 embeddings/norms; rope_theta 1e4, eps 1e-6",
        config={
            "architectures": ["BitNetForCausalLM"],
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "float16",
            "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear",
                                    "quantization_mode": "offline"},
            "transformers_version": "4.56.0",
        },
        fmt="packed", scale_mode="divide", float_dtype=torch.float16, shards=1,
    ),
    dict(
        name="gqa-online-master-headdim",
        seed=303,
        desc="quantization_mode online: fp32 master *_proj weights ternarized at load (gamma = mean|W| per "
             "tensor); explicit head_dim key (16: transformers cannot run head_dim != hidden/heads, see "
             "README); GQA 4/2; no `architectures`, no `tie_word_embeddings` key (default false -> "
             "lm_head.weight present); fp32 everything; rope_theta 5e4 (rope_parameters), eps 1e-5",
        config={
            "num_key_value_heads": 2,
            "head_dim": 16,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0},
            "dtype": "float32",
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                    "quantization_mode": "online"},
            "transformers_version": "5.17.0",
        },
        fmt="master", float_dtype=torch.float32, shards=1,
    ),
    dict(
        name="mha-noquant-bf16-sharded",
        seed=404,
        desc="no quantization_config (like the -bf16 release): bf16 master weights, sharded into 3 files "
             "+ model.safetensors.index.json; MHA 4/4; untied bf16 lm_head; transformers-4 config "
             "(rope_theta 5e5 top level), eps 1e-6. logits.npy/generate.json = ternarized (online) semantics; "
             "logits_plain_transformers.npy = what plain from_pretrained computes (dense nn.Linear, no quant)",
        config={
            "architectures": ["BitNetForCausalLM"],
            "num_key_value_heads": 4,
            "rms_norm_eps": 1e-6,
            "rope_theta": 500000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.56.0",
        },
        fmt="master", float_dtype=torch.bfloat16, shards=3,
    ),
]


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------
def rounded(a, dtype):
    """float32 numpy array -> values exactly representable in torch dtype (as float32 numpy)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(dtype).float().numpy()


def pack_ternary(w):
    """HF pack_weights layout: packed row r, bits 2i..2i+1 = (w[i*R + r] + 1), R = out/4."""
    out, _ = w.shape
    assert out % 4 == 0
    R = out // 4
    codes = (w + 1).astype(np.uint8)
    p = np.zeros((R, w.shape[1]), dtype=np.uint8)
    for i in range(4):
        p |= (codes[i * R:(i + 1) * R] << (2 * i)).astype(np.uint8)
    return p


def unpack_ternary(p):
    R = p.shape[0]
    w = np.zeros((4 * R, p.shape[1]), dtype=np.int8)
    for i in range(4):
        w[i * R:(i + 1) * R] = ((p >> (2 * i)) & 3).astype(np.int8) - 1
    return w


def ternarize(W):
    """bitnet.md: gamma = max(mean|W|, 1e-5); W_t = clamp(round(W / gamma), -1, 1) (float32)."""
    W = W.astype(np.float32)
    gamma = np.float32(max(np.float32(np.abs(W).mean(dtype=np.float64)), np.float32(1e-5)))
    return np.clip(np.rint(W / gamma), -1, 1).astype(np.int8), gamma


def master_weight(rng, shape, dtype):
    """Random master weight whose |W/gamma| stays >= 1e-3 away from the rounding ties 0.5 and 1.5."""
    W = rounded(rng.normal(0.0, 0.05, size=shape).astype(np.float32), dtype)
    for _ in range(100):
        _, gamma = ternarize(W)
        r = np.abs(W / gamma)
        bad = (np.abs(r - 0.5) < 1e-3) | (np.abs(r - 1.5) < 1e-3)
        if not bad.any():
            return W
        W = np.where(bad, rounded(W * np.float32(1.01), dtype), W).astype(np.float32)
    raise RuntimeError("could not keep master weights away from rounding ties")


def proj_shapes(cfg):
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    h, I = cfg["hidden_size"], cfg["intermediate_size"]
    return {
        "self_attn.q_proj": (H * D, h), "self_attn.k_proj": (KV * D, h), "self_attn.v_proj": (KV * D, h),
        "self_attn.o_proj": (h, H * D),
        "mlp.gate_proj": (I, h), "mlp.up_proj": (I, h), "mlp.down_proj": (h, I),
    }


def make_weights(case, cfg):
    """Returns (tensors to save: name -> torch tensor, reference weights for numpy: name -> np)."""
    rng = np.random.default_rng(case["seed"])
    fd = case["float_dtype"]
    h, V = cfg["hidden_size"], cfg["vocab_size"]
    tensors, ref = {}, {}

    def put_float(name, a):
        a = rounded(a, fd)
        tensors[name] = torch.from_numpy(a).to(fd).contiguous()
        ref[name] = a

    put_float("model.embed_tokens.weight", rng.normal(0.0, 0.5, size=(V, h)))
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        put_float(p + "input_layernorm.weight", rng.uniform(0.6, 1.4, size=h))
        put_float(p + "post_attention_layernorm.weight", rng.uniform(0.6, 1.4, size=h))
        put_float(p + "self_attn.attn_sub_norm.weight", rng.uniform(0.6, 1.4, size=h))
        put_float(p + "mlp.ffn_sub_norm.weight", rng.uniform(0.6, 1.4, size=cfg["intermediate_size"]))
        for proj, shape in proj_shapes(cfg).items():
            name = p + proj + ".weight"
            if case["fmt"] == "packed":
                p0 = rng.uniform(0.3, 0.5)  # fraction of zeros
                wt = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=shape,
                                p=[(1 - p0) / 2, p0, (1 - p0) / 2])
                packed = pack_ternary(wt)
                assert np.array_equal(unpack_ternary(packed), wt)
                gamma = np.float32(rounded(np.array([rng.uniform(0.4, 2.5)]), fd)[0])
                if case["scale_mode"] == "multiply":
                    ws = np.array([gamma], dtype=np.float32)
                else:  # bitlinear: y / weight_scale, weight_scale stored as 1/gamma (rounded to fd)
                    ws = rounded(np.array([1.0 / gamma], dtype=np.float32), fd)
                tensors[name] = torch.from_numpy(packed).contiguous()
                tensors[p + proj + ".weight_scale"] = torch.from_numpy(ws).to(fd).contiguous()
                ref[name] = ("ternary", wt, case["scale_mode"], ws[0])
            else:
                W = master_weight(rng, shape, fd)
                tensors[name] = torch.from_numpy(W).to(fd).contiguous()
                ref[name] = ("master", W)
    put_float("model.norm.weight", rng.uniform(0.6, 1.4, size=h))
    if not cfg.get("tie_word_embeddings", False):
        put_float("lm_head.weight", rng.normal(0.0, 0.5, size=(V, h)))
    return tensors, ref


def write_checkpoint(d, cfg, tensors, shards):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    names = list(tensors)
    if shards == 1:
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return
    # split in order into `shards` parts of about equal byte size
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    parts, cur, acc = [[] for _ in range(shards)], 0, 0
    for n in names:
        parts[cur].append(n)
        acc += tensors[n].numel() * tensors[n].element_size()
        if acc >= total * (cur + 1) / shards and cur < shards - 1:
            cur += 1
    assert all(parts)
    weight_map = {}
    for i, part in enumerate(parts):
        fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, os.path.join(d, fn), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fn
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# independent numpy reference (bitnet.md)
# ---------------------------------------------------------------------------------------------
def np_forward(cfg, ref, ids, quantize=True):
    f32 = np.float32
    eps = f32(cfg["rms_norm_eps"])
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    theta = cfg["rope_parameters"]["rope_theta"] if "rope_parameters" in cfg else cfg["rope_theta"]
    Tn = len(ids)

    def rms(v, w):
        return w * (v / np.sqrt((v.astype(f32) ** 2).mean(-1, keepdims=True) + eps)).astype(f32)

    def lin(x, name):
        r = ref[name]
        if r[0] == "ternary":
            wt, mode, ws = r[1].astype(f32), r[2], f32(r[3])
            gamma = ws if mode == "multiply" else f32(1.0) / ws
        else:
            if not quantize:
                return (x @ r[1].T).astype(f32)
            wt, gamma = ternarize(r[1])
            wt = wt.astype(f32)
        s = f32(127.0) / np.maximum(np.abs(x).max(-1, keepdims=True), f32(1e-5))
        xq = np.clip(np.rint(x * s), -128, 127).astype(f32)
        return ((xq @ wt.T) * gamma / s).astype(f32)

    inv_freq = (1.0 / (theta ** (np.arange(0, D, 2, dtype=np.float32) / D))).astype(f32)
    freqs = np.arange(Tn, dtype=f32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], -1)
    cos, sin = np.cos(emb).astype(f32), np.sin(emb).astype(f32)

    def rope(x):  # x [T, nh, D]
        x1, x2 = x[..., :D // 2], x[..., D // 2:]
        rot = np.concatenate([-x2, x1], -1)
        return x * cos[:, None, :] + rot * sin[:, None, :]

    x = ref["model.embed_tokens.weight"][ids].astype(f32)
    mask = np.triu(np.full((Tn, Tn), -np.inf, dtype=f32), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, ref[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj.weight").reshape(Tn, H, D))
        k = rope(lin(h, p + "self_attn.k_proj.weight").reshape(Tn, KV, D))
        v = lin(h, p + "self_attn.v_proj.weight").reshape(Tn, KV, D)
        o = np.zeros((Tn, H, D), dtype=f32)
        for hh in range(H):
            kvh = hh // (H // KV)
            sc = (q[:, hh] @ k[:, kvh].T) * f32(D ** -0.5) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            o[:, hh] = (sc / sc.sum(-1, keepdims=True)) @ v[:, kvh]
        o = rms(o.reshape(Tn, H * D), ref[p + "self_attn.attn_sub_norm.weight"])
        x = x + lin(o, p + "self_attn.o_proj.weight")
        h = rms(x, ref[p + "post_attention_layernorm.weight"])
        g = np.maximum(lin(h, p + "mlp.gate_proj.weight"), 0)
        m = rms(g * g * lin(h, p + "mlp.up_proj.weight"), ref[p + "mlp.ffn_sub_norm.weight"])
        x = x + lin(m, p + "mlp.down_proj.weight")
    x = rms(x, ref["model.norm.weight"])
    head = ref.get("lm_head.weight", ref["model.embed_tokens.weight"])
    return (x @ head.T).astype(f32)


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def min_margin(logits):
    s = np.sort(np.asarray(logits, np.float64), axis=-1)
    return float((s[..., -1] - s[..., -2]).min())


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------
class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(f"{record.levelname}: {record.getMessage()}")


def load(d):
    cap = LogCapture()
    lg = logging.getLogger("transformers")
    lg.addHandler(cap)
    try:
        model, info = BitNetForCausalLM.from_pretrained(
            d, dtype=torch.float32, device_map=None, attn_implementation="eager",
            output_loading_info=True)
    finally:
        lg.removeHandler(cap)
    model.eval()
    info = {k: sorted(map(str, v)) if isinstance(v, (list, set, tuple)) else str(v) for k, v in info.items()}
    return model, info, cap.records


def check_loaded(model, info):
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(k):
            raise RuntimeError(f"loading reported {k}: {info[k]}")
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and t.dtype != torch.float32]
    if bad:
        raise RuntimeError(f"non-float32 tensors after load: {bad[:5]}")


@torch.no_grad()
def tf_logits(model, ids):
    out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


@torch.no_grad()
def tf_generate(model, ids):
    gen = model.generate(
        input_ids=torch.tensor([ids], dtype=torch.long),
        attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
        do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS, min_new_tokens=0,
        eos_token_id=None, pad_token_id=0, temperature=None, top_p=None, top_k=None)
    new = gen[0, len(ids):].tolist()
    assert len(new) == NEW_TOKENS, new
    return new


def with_config_patch(src, dst, patch_cfg=None, patch_tensor=None):
    """Copy checkpoint folder src to dst, optionally modifying config.json / one tensor."""
    shutil.copytree(src, dst)
    if patch_cfg:
        with open(os.path.join(dst, "config.json")) as f:
            cfg = json.load(f)
        patch_cfg(cfg)
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg, f)
    if patch_tensor:
        from safetensors.torch import load_file
        name, fn = patch_tensor
        for sf in os.listdir(dst):
            if sf.endswith(".safetensors"):
                t = load_file(os.path.join(dst, sf))
                if name in t:
                    t[name] = fn(t[name])
                    save_file(t, os.path.join(dst, sf), metadata={"format": "pt"})
                    return
        raise KeyError(name)


def make_case(case, out, tmp):
    name = case["name"]
    cfg = dict(BASE)
    cfg.update(copy.deepcopy(case["config"]))
    tensors, ref = make_weights(case, cfg)
    d = os.path.join(out, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    write_checkpoint(d, cfg, tensors, case["shards"])
    meta = {"case": name, "description": case["desc"], "seed": case["seed"],
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0]},
            "config_written": cfg, "compute": "float32, CPU, attn_implementation=eager, TORCHDYNAMO_DISABLE=1"}

    # transformers' own packer must agree with ours
    if case["fmt"] == "packed":
        from transformers.integrations.bitnet import pack_weights, unpack_weights
        for n, r in ref.items():
            if isinstance(r, tuple):
                hf = pack_weights(torch.from_numpy(r[1].astype(np.int64)).clone()).numpy()
                assert np.array_equal(hf, tensors[n].numpy()), n
                un = unpack_weights(tensors[n], dtype=torch.float32).numpy()
                assert np.array_equal(un, r[1].astype(np.float32)), n
        meta["packing_check"] = "our packing == transformers.integrations.bitnet.pack_weights; unpack round-trips"

    # load (case d: plain load = dense; goldens with online quant injected into a temp copy)
    load_dir = d
    if "quantization_config" not in cfg:
        plain, info_plain, logs_plain = load(d)
        check_loaded(plain, info_plain)
        meta["plain_load"] = {"q_proj_class": type(plain.model.layers[0].self_attn.q_proj).__name__,
                              "loading_info": info_plain, "log": logs_plain}
        load_dir = os.path.join(tmp, name + "-online")
        with_config_patch(d, load_dir, patch_cfg=lambda c: c.update(quantization_config={
            "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}))
        meta["golden_semantics"] = ("ternarized: loaded from a temp copy whose config.json adds quantization_config "
                                    "{quant_method: bitnet, linear_class: autobitlinear, quantization_mode: online}")
    model, info, logs = load(load_dir)
    check_loaded(model, info)
    q = model.model.layers[0].self_attn.q_proj
    meta["loaded"] = {
        "q_proj_class": type(q).__name__, "q_proj_module": type(q).__module__,
        "q_proj_weight": [str(q.weight.dtype), list(q.weight.shape)],
        "lm_head_class": type(model.lm_head).__name__,
        "tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "lm_head_is_embed": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "head_dim": q.out_features // model.config.num_attention_heads if hasattr(q, "out_features") else None,
        "loading_info": info, "log": logs,
        "config_parsed": json.loads(model.config.to_json_string(use_diff=False)),
    }
    meta["loaded"]["config_parsed"].pop("_name_or_path", None)  # temp path: keep meta.json deterministic
    if "quantization_config" in cfg or load_dir != d:
        expect = {"autobitlinear": "AutoBitLinear", "bitlinear": "BitLinear"}[
            (cfg.get("quantization_config") or {"linear_class": "autobitlinear"})["linear_class"]]
        assert type(q).__name__ == expect, type(q)
    assert meta["loaded"]["lm_head_is_embed"] == bool(cfg.get("tie_word_embeddings", False))

    # choose input ids (seeded) whose logits and greedy path have clear top-1 margins
    rng = np.random.default_rng(case["seed"] + 7)
    for attempt in range(200):
        ids = rng.integers(3, cfg["vocab_size"], size=T).astype(np.int32)
        logits = tf_logits(model, ids.tolist())
        new = tf_generate(model, ids.tolist())
        full = tf_logits(model, ids.tolist() + new)  # no KV cache
        greedy_ok = [int(a) for a in full[T - 1:T - 1 + NEW_TOKENS].argmax(-1)] == new
        m_log, m_gen = min_margin(logits), min_margin(full[T - 1:T - 1 + NEW_TOKENS])
        if greedy_ok and min(m_log, m_gen) >= MIN_MARGIN and len(set(new)) >= MIN_DISTINCT \
                and cfg["eos_token_id"] not in new:
            break
    else:
        raise RuntimeError(f"{name}: no input with margins >= {MIN_MARGIN} and a non-degenerate continuation")
    meta["input_attempts"] = attempt + 1
    meta["min_top1_margin"] = {"logits": m_log, "generate": m_gen}
    meta["logits_std"] = float(logits.std())

    # independent numpy reference
    ref_logits = np_forward(cfg, ref, ids)
    meta["numpy_reference"] = {"rel_l2": rel_l2(logits, ref_logits),
                               "argmax_equal": bool((ref_logits.argmax(-1) == logits.argmax(-1)).all())}
    ref_full = np_forward(cfg, ref, np.array(ids.tolist() + new))
    meta["numpy_reference"]["generate_equal"] = [int(a) for a in ref_full[T - 1:T - 1 + NEW_TOKENS].argmax(-1)] == new
    if not (meta["numpy_reference"]["rel_l2"] < 1e-5 and meta["numpy_reference"]["argmax_equal"]
            and meta["numpy_reference"]["generate_equal"]):
        raise RuntimeError(f"{name}: numpy reference disagrees: {meta['numpy_reference']}")

    # sanity: the checkpoint's weight_scale really is used
    if case["fmt"] == "packed":
        pd = os.path.join(tmp, name + "-ws2")
        with_config_patch(d, pd, patch_tensor=("model.layers.0.self_attn.q_proj.weight_scale", lambda t: t * 2))
        m2, _, _ = load(pd)
        l2 = tf_logits(m2, ids.tolist())
        meta["weight_scale_doubled_rel_change"] = rel_l2(l2, logits)
        assert meta["weight_scale_doubled_rel_change"] > 1e-3
        ref2 = dict(ref)
        r = ref2["model.layers.0.self_attn.q_proj.weight"]
        ref2["model.layers.0.self_attn.q_proj.weight"] = (r[0], r[1], r[2], np.float32(r[3] * 2))
        meta["weight_scale_doubled_vs_numpy"] = rel_l2(l2, np_forward(cfg, ref2, ids))
        assert meta["weight_scale_doubled_vs_numpy"] < 1e-5

    if load_dir != d:  # case without quantization_config: also keep the dense result
        plain_logits = tf_logits(plain, ids.tolist())
        np.save(os.path.join(d, "logits_plain_transformers.npy"), plain_logits.astype(np.float32))
        meta["plain_transformers_vs_numpy_dense"] = rel_l2(plain_logits, np_forward(cfg, ref, ids, quantize=False))
        meta["plain_vs_ternarized_rel_l2"] = rel_l2(plain_logits, logits)

    # head_dim != hidden/heads: try it and record what transformers does
    if "head_dim" in cfg:
        try:
            c2 = BitNetForCausalLM.config_class(**{k: v for k, v in cfg.items()
                                                  if k not in ("quantization_config", "transformers_version")})
            c2.head_dim = 32
            m3 = BitNetForCausalLM(c2).eval()
            with torch.no_grad():
                m3(input_ids=torch.tensor([ids.tolist()]))
            meta["head_dim_32_attempt"] = "ran (unexpected)"
        except Exception as e:  # noqa: BLE001
            meta["head_dim_32_attempt"] = f"{type(e).__name__}: {e}"

    np.save(os.path.join(d, "input_ids.npy"), ids.astype(np.int32))
    np.save(os.path.join(d, "logits.npy"), logits.astype(np.float32))
    with open(os.path.join(d, "generate.json"), "w") as f:
        json.dump({"prompt_ids": [int(i) for i in ids], "new_ids": new}, f)
        f.write("\n")
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    for fn in os.listdir(d):
        os.chmod(os.path.join(d, fn), 0o644)
    print(f"{name}: q_proj={meta['loaded']['q_proj_class']} rel_l2(numpy)={meta['numpy_reference']['rel_l2']:.2e} "
          f"margins={m_log:.3f}/{m_gen:.3f} attempts={attempt + 1} new_ids={new}", flush=True)
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    a = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if a.only and case["name"] not in a.only:
                continue
            make_case(case, a.out, tmp)
    print("ok")


if __name__ == "__main__":
    main()
