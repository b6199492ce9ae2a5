#!/usr/bin/env python3
"""tlc's LoRA gradients against float64 central finite differences.

A float64 numpy BitNet (packed autobitlinear checkpoint, tied head) with
PEFT LoRA on every projection computes the loss of a batch. Activation
quantization is a straight-through estimator, i.e. the function whose exact
derivative tlc computes is the forward with each quantization residual
Q(x) - x frozen at the current point; the finite differences perturb one
adapter entry at a time in that function (residuals recorded at the
unperturbed point). tlc's gradient comes from one SGD step with lr 1
(adapter written = init - gradient). Checks 6 random entries of every
adapter tensor: relative L2 error per tensor <= 1e-3. Cases: GQA packed
autobitlinear with the PEFT golden adapter, and MHA packed bitlinear with
an untied head (PEFT cannot wrap it) with a random non-zero adapter.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))


def load_tensors(path):
    """safetensors -> numpy, bf16 widened to float32 (numpy has no bf16)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    kinds = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "BF16": np.uint16, "I64": np.int64}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        t = np.frombuffer(raw[8 + n + a:8 + n + b], kinds[v["dtype"]]).reshape(v["shape"])
        if v["dtype"] == "BF16":
            t = (t.astype(np.uint32) << 16).view(np.float32)
        out[k] = t
    return out


class Model:
    def __init__(self, folder, adapter):
        self.c = json.load(open(os.path.join(folder, "config.json")))
        # autobitlinear multiplies by weight_scale, bitlinear divides (bitnet.md)
        self.divide = self.c["quantization_config"]["linear_class"] == "bitlinear"
        w = load_tensors(os.path.join(folder, "model.safetensors"))
        self.w = {k: v.astype(np.float64) if v.dtype != np.uint8 else v for k, v in w.items()}
        acfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
        self.scaling = acfg["lora_alpha"] / acfg["r"]
        self.lora = {k: v.astype(np.float64) for k, v in load_file(os.path.join(adapter, "adapter_model.safetensors")).items()}
        self.frozen = None  # residuals Q(x) - x by call index, when frozen
        self.record = None

    def ternary(self, name):
        p = self.w[name + ".weight"]
        R = p.shape[0]
        codes = np.concatenate([((p >> (2 * i)) & 3).astype(np.int64) - 1 for i in range(4)], axis=0)
        assert codes.shape[0] == 4 * R
        ws = float(self.w[name + ".weight_scale"].reshape(-1)[0])
        return codes.astype(np.float64), 1.0 / ws if self.divide else ws

    def quant(self, x):
        s = 127.0 / np.maximum(np.abs(x).max(-1, keepdims=True), 1e-5)
        q = np.clip(np.round(x * s), -128, 127) / s
        i = self.calls
        self.calls += 1
        if self.record is not None:
            self.record.append(q - x)
        if self.frozen is not None:
            return x + self.frozen[i]
        return q

    def linear(self, x, name):
        W, g = self.ternary(name)
        y = self.quant(x) @ W.T * g
        key = "base_model.model." + name
        A, B = self.lora[key + ".lora_A.weight"], self.lora[key + ".lora_B.weight"]
        return y + self.scaling * (x @ A.T) @ B.T

    def norm(self, x, name):
        return self.w[name] * x / np.sqrt((x * x).mean(-1, keepdims=True) + self.c["rms_norm_eps"])

    def rope(self, x, heads, hd, S):
        theta = self.c.get("rope_parameters", {}).get("rope_theta", self.c.get("rope_theta"))
        inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(S)[:, None] * inv[None, :]
        cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
        x = x.reshape(x.shape[0], S, heads, hd)
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return (x * cos[None, :, None] + rot * sin[None, :, None]).reshape(x.shape[0], S, heads * hd)

    def loss(self, ids):
        c = self.c
        self.calls = 0
        B, S = ids.shape
        H, KVH = c["num_attention_heads"], c["num_key_value_heads"]
        hd = c.get("head_dim") or c["hidden_size"] // H
        x = self.w["model.embed_tokens.weight"][ids]
        for l in range(c["num_hidden_layers"]):
            p = "model.layers.%d." % l
            h = self.norm(x, p + "input_layernorm.weight")
            q = self.rope(self.linear(h, p + "self_attn.q_proj"), H, hd, S)
            k = self.rope(self.linear(h, p + "self_attn.k_proj"), KVH, hd, S)
            v = self.linear(h, p + "self_attn.v_proj")
            q = q.reshape(B, S, H, hd).transpose(0, 2, 1, 3)
            k = np.repeat(k.reshape(B, S, KVH, hd).transpose(0, 2, 1, 3), H // KVH, axis=1)
            v = np.repeat(v.reshape(B, S, KVH, hd).transpose(0, 2, 1, 3), H // KVH, axis=1)
            sc = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + np.triu(np.full((S, S), -np.inf), 1)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            o = (pr / pr.sum(-1, keepdims=True)) @ v
            o = o.transpose(0, 2, 1, 3).reshape(B, S, H * hd)
            o = self.norm(o, p + "self_attn.attn_sub_norm.weight")
            x = x + self.linear(o, p + "self_attn.o_proj")
            h = self.norm(x, p + "post_attention_layernorm.weight")
            m = np.maximum(self.linear(h, p + "mlp.gate_proj"), 0) ** 2 * self.linear(h, p + "mlp.up_proj")
            m = self.norm(m, p + "mlp.ffn_sub_norm.weight")
            x = x + self.linear(m, p + "mlp.down_proj")
        x = self.norm(x, "model.norm.weight")
        head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        logits = x @ head.T
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        tgt = np.take_along_axis(logits[:, :-1], ids[:, 1:, None], -1)[..., 0]
        return float((lse[:, :-1] - tgt).mean())


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(folder, out, seed):
    """A PEFT adapter (r=4, alpha=8, all 7 projections) with random non-zero
    A and B, for checkpoints PEFT cannot wrap (linear_class bitlinear)."""
    from safetensors.numpy import save_file
    c = json.load(open(os.path.join(folder, "config.json")))
    D, I = c["hidden_size"], c["intermediate_size"]
    hd = c.get("head_dim") or D // c["num_attention_heads"]
    dims = {"q_proj": (c["num_attention_heads"] * hd, D), "k_proj": (c["num_key_value_heads"] * hd, D),
            "v_proj": (c["num_key_value_heads"] * hd, D), "o_proj": (D, c["num_attention_heads"] * hd),
            "gate_proj": (I, D), "up_proj": (I, D), "down_proj": (D, I)}
    rng = np.random.default_rng(seed)
    t = {}
    for l in range(c["num_hidden_layers"]):
        for m in TARGETS:
            part = "mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            key = "base_model.model.model.layers.%d.%s.%s" % (l, part, m)
            o, i = dims[m]
            t[key + ".lora_A.weight"] = (rng.standard_normal((4, i)) * 0.2).astype(np.float32)
            t[key + ".lora_B.weight"] = (rng.standard_normal((o, 4)) * 0.1).astype(np.float32)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": TARGETS},
              open(os.path.join(out, "adapter_config.json"), "w"))
    return rng.integers(0, c["vocab_size"], size=(2, 12)).astype(np.int32)


def check_case(case, args, tmp):
    folder = os.path.join(HERE, "goldens", case)
    gold = os.path.join(HERE, "lora-goldens", case)
    adapter = os.path.join(gold, "adapter")
    data = os.path.join(gold, "train_ids.npy")
    if not os.path.isdir(adapter):
        adapter, data = os.path.join(tmp, case + "-init"), os.path.join(tmp, case + "-ids.npy")
        np.save(data, random_adapter(folder, adapter, 17))
    batch = np.load(data)
    module, out = os.path.join(tmp, case + ".tlm"), os.path.join(tmp, case + "-out")
    subprocess.run([os.path.join(args.bin, "tlc"), "compile", folder, "--train", "-o", module, "--lora-rank", "4",
                    "--lora-alpha", "8", "--seq-len", str(batch.shape[1]), "--batch", str(batch.shape[0]),
                    "--optimizer", "sgd"], check=True, capture_output=True)
    subprocess.run([os.path.join(args.bin, "tlc-run"), "train", module, "--data", data,
                    "--steps", "1", "--lr", "1", "--init-adapter", adapter, "--out", out,
                    "--shuffle", "false"], check=True, capture_output=True)
    init = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    trained = load_file(os.path.join(out, "adapter_model.safetensors"))
    model = Model(folder, adapter)
    ids = batch.astype(np.int64)
    model.record = []
    model.loss(ids)
    model.frozen, model.record = model.record, None
    rng = np.random.default_rng(0)
    h, worst, failures = 1e-5, 0.0, 0
    for key in sorted(init):
        t = model.lora[key]
        g_tlc = init[key].astype(np.float64) - trained[key].astype(np.float64)
        picks = [tuple(rng.integers(0, n) for n in t.shape) for _ in range(args.entries)]
        fd, ours = [], []
        for idx in picks:
            old = t[idx]
            t[idx] = old + h
            up = model.loss(ids)
            t[idx] = old - h
            down = model.loss(ids)
            t[idx] = old
            fd.append((up - down) / (2 * h))
            ours.append(g_tlc[idx])
        fd, ours = np.array(fd), np.array(ours)
        err = np.linalg.norm(fd - ours) / max(np.linalg.norm(fd), 1e-30)
        worst = max(worst, err)
        if not err <= 1e-3:
            failures += 1
            print("%s: %s: relative error %.3e FAIL (fd %s, tlc %s)" % (case, key, err, fd, ours))
    print("%s: %d tensors x %d entries, worst relative error %.2e %s"
          % (case, len(init), args.entries, worst, "PASS" if failures == 0 else "FAIL"))
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--cases", nargs="*", default=["gqa-autobitlinear-tied", "mha-bitlinear-untied"])
    ap.add_argument("--entries", type=int, default=6)
    args = ap.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            failures += check_case(case, args, tmp)
    print("finite differences: %s" % ("PASS" if failures == 0 else "FAIL"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
