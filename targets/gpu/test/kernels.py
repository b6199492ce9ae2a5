#!/usr/bin/env python3
"""The GPU kernels, one small tlora program each, against plain numpy references.

Each case is a function of a few tlora ops in the shapes that pick a kernel
variant (decode products of 16, 32 and 64 invocations per output, tiled
prefill products, the fused q/k/v + rope + KV append, the gated MLP, the
residual epilogue, row-range bindings). The script lowers it with tlc-opt
(-tlc-gpu-form-dispatches, then -tlc-vulkan-lower-to-spirv), fills every
buffer the kernels take with random data in the layouts the GPU target
stores, runs the dispatches in order with vulkan_run (the runtime's Vulkan
driver), and compares what the function returns, and the KV caches it
writes, with float64 references written here from the ops' definitions.

    kernels.py --bin BUILD/bin [--case NAME] [--keep DIR]

Prints a line per case and "N cases, F failures"; exit status 1 on failure.
numpy only; needs a Vulkan device (lavapipe in CI: VK_ICD_FILENAMES).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

rng = np.random.default_rng(2026)


# ---------------------------------------------------------------- layouts --

def bf16(a):
    """Round-to-zero float32 values to bf16 (exact in both): (values, bytes)."""
    bits = np.asarray(a, np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32), (bits >> 16).astype(np.uint16).tobytes()


def pack_t2_rows(codes, gamma):
    """The GPU targets' ternary layout ("t2-rows", targets/gpu/Passes.h): a
    64-byte header with gamma first, then per row words of sixteen 2-bit
    codes (value + 1), element 4a + b of a word at bits 8b + 2a."""
    n, k = codes.shape
    words = (k + 15) // 16
    c = np.zeros((n, words * 16), np.uint32)
    c[:, :k] = (codes + 1).astype(np.uint32)
    c = c.reshape(n, words, 4, 4)  # [row, word, a, b]: element 4a + b
    shift = 8 * np.arange(4)[None, None, None, :] + 2 * np.arange(4)[None, None, :, None]
    packed = (c << shift.astype(np.uint32)).sum(axis=(2, 3), dtype=np.uint64).astype(np.uint32)
    header = np.zeros(16, np.uint32)
    header[0] = np.float32(gamma).view(np.uint32)
    return header.tobytes() + packed.tobytes()


def memref_bytes(ty):
    """Bytes of a memref type's text, e.g. memref<16x80xf32> or memref<5xvector<4xi32>>."""
    m = re.fullmatch(r"memref<((?:\d+x)*)(?:vector<(\d+)x)?(f32|i32|bf16|i16|i8)>?(?:, \d+)?>", ty)
    if not m:
        raise ValueError(f"unexpected kernel buffer type {ty}")
    n = int(m.group(2) or 1)
    for d in m.group(1).split("x")[:-1]:
        n *= int(d)
    return n * {"f32": 4, "i32": 4, "bf16": 2, "i16": 2, "i8": 1}[m.group(3)]


# ------------------------------------------------------------- references --

def quantize(x):
    """Per-token absmax int8 (tlora.quantize), in float32 as the kernels do:
    (codes, s, ties) where ties counts the codes of each row within 2e-4 of
    a rounding tie (a last-bit difference in x may move them by one)."""
    x = np.asarray(x, np.float32)
    amax = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
    s = np.float32(127) / amax
    v = x * s
    q = np.clip(np.rint(v), -128, 127)
    ties = (np.abs(np.abs(v - np.floor(v)) - 0.5) < 2e-4).sum(axis=-1)
    return q.astype(np.int64), s.astype(np.float64), ties


def ternary(xq, w):
    """BitLinear on quantized input: exact int32 products * gamma / s."""
    q, s, _ = xq
    codes, gamma = w
    return (q @ codes.T.astype(np.int64)) * gamma / s


def rms_norm(x, w, eps=1e-5):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def rope(x, pos, hd, theta):
    """Rotate-half rotary embedding of each head at positions pos + t."""
    T, d = x.shape
    h = x.reshape(T, d // hd, hd).astype(np.float64)
    i = np.arange(hd // 2)
    ang = (pos + np.arange(T))[:, None] * theta ** (-2.0 * i / hd)[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = h[..., : hd // 2], h[..., hd // 2:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1).reshape(T, d)


def attention(q, kc, vc, pos, hd, scale):
    """Causal attention of T queries over cache rows 0 .. pos + t (GQA)."""
    T, dq = q.shape
    H, KVH = dq // hd, kc.shape[1] // hd
    out = np.zeros((T, dq))
    for t in range(T):
        n = pos + t + 1
        for h in range(H):
            g = h // (H // KVH)
            k = kc[:n, g * hd:(g + 1) * hd].astype(np.float64)
            v = vc[:n, g * hd:(g + 1) * hd].astype(np.float64)
            p = k @ q[t, h * hd:(h + 1) * hd].astype(np.float64) * scale
            p = np.exp(p - p.max())
            out[t, h * hd:(h + 1) * hd] = p @ v / p.sum()
    return out


def ternary_codes(n, k):
    return rng.integers(-1, 2, size=(n, k)).astype(np.int8)


def acts(T, d, scale=2.0):
    return rng.uniform(-scale, scale, size=(T, d)).astype(np.float32)


# ------------------------------------------------------------------ cases --
# A case: MLIR text of one function (tensor inputs as arguments, `%pos` and
# `%rows` the scalars), its inputs, and its expected outputs as
# (value, tolerance) pairs: results in order, then KV caches by name.

class Case:
    def __init__(self, name, mlir, T, pos=0, rows=0, args=(), weights=None,
                 caches=None, want=(), want_caches=None, flags=""):
        self.name, self.mlir, self.T, self.pos, self.rows = name, mlir, T, pos, rows
        self.args, self.weights, self.caches = list(args), weights or {}, caches or {}
        self.want, self.want_caches, self.flags = list(want), want_caches or {}, flags


def tol(want, rel=1e-5, abs_=1e-5):
    return want, rel * np.abs(want) + abs_


def case_products(tm, T, K, N, name, flags):
    """quantize + ternary_matmul: decode (16-64 invocations per output by row
    length) or tiled prefill."""
    codes = ternary_codes(N, K)
    for _ in range(1000):  # no value near a rounding tie: see case_attention_layer
        xq = quantize(x := acts(T, K))
        if xq[2].sum() == 0:
            break
    else:
        raise RuntimeError("no input without rounding ties")
    y = ternary(xq, (codes, 1.25))
    mlir = f"""
func.func @f(%x: tensor<?x{K}xf32>, %pos: index, %rows: index) -> tensor<?x{N}xf32> attributes {{tlora.max_tokens = {tm} : i64}} {{
  %w = tlora.ternary_weight "w" scale(1.25) source(packed) : !tlora.ternary<outFeatures = {N}, inFeatures = {K}>
  %q = tlora.quantize %x : tensor<?x{K}xf32> -> !tlora.qact<features = {K}>
  %y = tlora.ternary_matmul %q, %w : !tlora.qact<features = {K}>, !tlora.ternary<outFeatures = {N}, inFeatures = {K}> -> tensor<?x{N}xf32>
  return %y : tensor<?x{N}xf32>
}}"""
    return Case(name, mlir, T, args=[x], weights={"w": codes},
                want=[tol(y)], flags=flags)


def case_attention_layer(tm, T, pos, name, flags):
    """A decoder layer's attention half: RMSNorm + quantize, q/k/v products
    (one kernel), rope of q and k, KV append, GQA attention, attn sub-norm,
    o_proj with the residual added; caches hold random rows before pos.
    Inputs are drawn again until no quantized value lies near a rounding
    tie, so every stage holds to float32 rounding (no slack)."""
    D, H, KVH, hd, S, theta = 64, 4, 2, 16, 32, 500000.0
    DKV = KVH * hd
    nw, nw_bytes = bf16(rng.uniform(0.5, 1.5, D))
    sw, sw_bytes = bf16(rng.uniform(0.5, 1.5, D))
    wq, wk, wv, wo = (ternary_codes(n, D) for n in (D, DKV, DKV, D))
    kc0 = rng.uniform(-1, 1, (S, DKV)).astype(np.float32)
    vc0 = rng.uniform(-1, 1, (S, DKV)).astype(np.float32)
    for _ in range(1000):
        x = acts(T, D)
        xq = quantize(rms_norm(x, nw).astype(np.float32))
        q, k, v = (ternary(xq, w) for w in ((wq, 1.5), (wk, 0.75), (wv, 2.0)))
        q, k = rope(q, pos, hd, theta), rope(k, pos, hd, theta)
        kc, vc = kc0.astype(np.float64), vc0.astype(np.float64)
        kc[pos:pos + T], vc[pos:pos + T] = k, v
        a = attention(q, kc, vc, pos, hd, 0.25)
        aq = quantize(rms_norm(a, sw).astype(np.float32))
        if xq[2].sum() + aq[2].sum() == 0:
            break
    else:
        raise RuntimeError("no input without rounding ties")
    y = x + ternary(aq, (wo, 1.0))
    mlir = f"""
func.func @f(%x: tensor<?x{D}xf32>, %pos: index, %rows: index) -> tensor<?x{D}xf32> attributes {{tlora.max_tokens = {tm} : i64}} {{
  %nw = tlora.weight "norm" : tensor<{D}xbf16>
  %h = tlora.rms_norm %x, %nw eps(1.0e-5) : tensor<?x{D}xf32>, tensor<{D}xbf16> -> tensor<?x{D}xf32>
  %wq = tlora.ternary_weight "wq" scale(1.5) source(packed) : !tlora.ternary<outFeatures = {D}, inFeatures = {D}>
  %wk = tlora.ternary_weight "wk" scale(0.75) source(packed) : !tlora.ternary<outFeatures = {DKV}, inFeatures = {D}>
  %wv = tlora.ternary_weight "wv" scale(2.0) source(packed) : !tlora.ternary<outFeatures = {DKV}, inFeatures = {D}>
  %hq = tlora.quantize %h : tensor<?x{D}xf32> -> !tlora.qact<features = {D}>
  %q = tlora.ternary_matmul %hq, %wq : !tlora.qact<features = {D}>, !tlora.ternary<outFeatures = {D}, inFeatures = {D}> -> tensor<?x{D}xf32>
  %k = tlora.ternary_matmul %hq, %wk : !tlora.qact<features = {D}>, !tlora.ternary<outFeatures = {DKV}, inFeatures = {D}> -> tensor<?x{DKV}xf32>
  %v = tlora.ternary_matmul %hq, %wv : !tlora.qact<features = {D}>, !tlora.ternary<outFeatures = {DKV}, inFeatures = {D}> -> tensor<?x{DKV}xf32>
  %qr = tlora.rope %q at %pos head_dim({hd}) theta({theta}) : tensor<?x{D}xf32> -> tensor<?x{D}xf32>
  %kr = tlora.rope %k at %pos head_dim({hd}) theta({theta}) : tensor<?x{DKV}xf32> -> tensor<?x{DKV}xf32>
  %kc = tlora.kv_cache "keys" : !tlora.kv_cache<maxSeq = {S}, kvHeads = {KVH}, headDim = {hd}>
  %vc = tlora.kv_cache "values" : !tlora.kv_cache<maxSeq = {S}, kvHeads = {KVH}, headDim = {hd}>
  tlora.kv_append %kr into %kc at %pos : tensor<?x{DKV}xf32>, !tlora.kv_cache<maxSeq = {S}, kvHeads = {KVH}, headDim = {hd}>
  tlora.kv_append %v into %vc at %pos : tensor<?x{DKV}xf32>, !tlora.kv_cache<maxSeq = {S}, kvHeads = {KVH}, headDim = {hd}>
  %a = tlora.attention %qr, %kc, %vc at %pos scale(0.25) : tensor<?x{D}xf32>, !tlora.kv_cache<maxSeq = {S}, kvHeads = {KVH}, headDim = {hd}> -> tensor<?x{D}xf32>
  %sw = tlora.weight "sub_norm" : tensor<{D}xbf16>
  %an = tlora.rms_norm %a, %sw eps(1.0e-5) : tensor<?x{D}xf32>, tensor<{D}xbf16> -> tensor<?x{D}xf32>
  %wo = tlora.ternary_weight "wo" scale(1.0) source(packed) : !tlora.ternary<outFeatures = {D}, inFeatures = {D}>
  %aq = tlora.quantize %an : tensor<?x{D}xf32> -> !tlora.qact<features = {D}>
  %o = tlora.ternary_matmul %aq, %wo : !tlora.qact<features = {D}>, !tlora.ternary<outFeatures = {D}, inFeatures = {D}> -> tensor<?x{D}xf32>
  %y = arith.addf %x, %o : tensor<?x{D}xf32>
  return %y : tensor<?x{D}xf32>
}}"""
    return Case(name, mlir, T, pos=pos, args=[x],
                weights={"norm": nw_bytes, "sub_norm": sw_bytes, "wq": wq, "wk": wk,
                         "wv": wv, "wo": wo},
                caches={"keys": kc0, "values": vc0},
                want=[tol(y)],
                want_caches={"keys": tol(kc), "values": tol(vc)},
                flags=flags)


def case_mlp(tm, T, name, flags):
    """The MLP half: RMSNorm + quantize, gate and up (one kernel) with
    relu(gate)^2 * up, the ffn sub-norm, down with the residual added;
    inputs drawn as in case_attention_layer."""
    D, F = 64, 160
    nw, nw_bytes = bf16(rng.uniform(0.5, 1.5, D))
    fw = rng.uniform(0.5, 1.5, F).astype(np.float32)
    wg, wu, wd = ternary_codes(F, D), ternary_codes(F, D), ternary_codes(D, F)
    for _ in range(1000):
        x = acts(T, D)
        xq = quantize(rms_norm(x, nw).astype(np.float32))
        m = np.maximum(ternary(xq, (wg, 1.5)), 0) ** 2 * ternary(xq, (wu, 0.5))
        mq = quantize(rms_norm(m, fw).astype(np.float32))
        if xq[2].sum() + mq[2].sum() == 0:
            break
    else:
        raise RuntimeError("no input without rounding ties")
    y = x + ternary(mq, (wd, 2.0))
    mlir = f"""
func.func @f(%x: tensor<?x{D}xf32>, %pos: index, %rows: index) -> tensor<?x{D}xf32> attributes {{tlora.max_tokens = {tm} : i64}} {{
  %nw = tlora.weight "norm" : tensor<{D}xbf16>
  %h = tlora.rms_norm %x, %nw eps(1.0e-5) : tensor<?x{D}xf32>, tensor<{D}xbf16> -> tensor<?x{D}xf32>
  %hq = tlora.quantize %h : tensor<?x{D}xf32> -> !tlora.qact<features = {D}>
  %wg = tlora.ternary_weight "gate" scale(1.5) source(packed) : !tlora.ternary<outFeatures = {F}, inFeatures = {D}>
  %wu = tlora.ternary_weight "up" scale(0.5) source(packed) : !tlora.ternary<outFeatures = {F}, inFeatures = {D}>
  %g = tlora.ternary_matmul %hq, %wg : !tlora.qact<features = {D}>, !tlora.ternary<outFeatures = {F}, inFeatures = {D}> -> tensor<?x{F}xf32>
  %u = tlora.ternary_matmul %hq, %wu : !tlora.qact<features = {D}>, !tlora.ternary<outFeatures = {F}, inFeatures = {D}> -> tensor<?x{F}xf32>
  %m = tlora.squared_relu_mul %g, %u : tensor<?x{F}xf32>
  %fw = tlora.weight "ffn_norm" : tensor<{F}xf32>
  %mn = tlora.rms_norm %m, %fw eps(1.0e-5) : tensor<?x{F}xf32>, tensor<{F}xf32> -> tensor<?x{F}xf32>
  %mq = tlora.quantize %mn : tensor<?x{F}xf32> -> !tlora.qact<features = {F}>
  %wd = tlora.ternary_weight "down" scale(2.0) source(packed) : !tlora.ternary<outFeatures = {D}, inFeatures = {F}>
  %d = tlora.ternary_matmul %mq, %wd : !tlora.qact<features = {F}>, !tlora.ternary<outFeatures = {D}, inFeatures = {F}> -> tensor<?x{D}xf32>
  %y = arith.addf %x, %d : tensor<?x{D}xf32>
  return %y : tensor<?x{D}xf32>
}}"""
    return Case(name, mlir, T, args=[x],
                weights={"norm": nw_bytes, "ffn_norm": fw, "gate": wg, "up": wu, "down": wd},
                want=[tol(y)], flags=flags)


def case_embed_head(tm, T, rows, V, D, dtype, name, flags):
    """Embedding rows, a final RMSNorm, the LM head for the last `rows`
    tokens (f32 or bf16 weights; row ranges where flags cap bindings)."""
    ids = rng.integers(0, V, size=T).astype(np.int32)
    table = rng.uniform(-1, 1, (V, D)).astype(np.float32)
    head = rng.uniform(-1, 1, (V, D)).astype(np.float32)
    nw = rng.uniform(0.5, 1.5, D).astype(np.float32)
    if dtype == "bf16":
        table, table_bytes = bf16(table)
        head, head_bytes = bf16(head)
    else:
        table_bytes, head_bytes = table, head
    h = rms_norm(table[ids].astype(np.float64), nw)
    y = np.zeros((tm, V))
    y[:rows] = h[T - rows:] @ head.T.astype(np.float64)
    mlir = f"""
func.func @f(%ids: tensor<?xi32>, %pos: index, %rows: index) -> tensor<?x{V}xf32> attributes {{tlora.max_tokens = {tm} : i64}} {{
  %t = tlora.weight "table" : tensor<{V}x{D}x{dtype}>
  %x = tlora.embed %t[%ids] : tensor<{V}x{D}x{dtype}>, tensor<?xi32> -> tensor<?x{D}xf32>
  %nw = tlora.weight "norm" : tensor<{D}xf32>
  %h = tlora.rms_norm %x, %nw eps(1.0e-5) : tensor<?x{D}xf32>, tensor<{D}xf32> -> tensor<?x{D}xf32>
  %w = tlora.weight "head" : tensor<{V}x{D}x{dtype}>
  %y = tlora.dense %h, %w rows(%rows) : tensor<?x{D}xf32>, tensor<{V}x{D}x{dtype}> -> tensor<?x{V}xf32>
  return %y : tensor<?x{V}xf32>
}}"""
    # the rows past `rows` are not the head's: compare only those it writes
    want = y[:rows]
    return Case(name, mlir, T, rows=rows, args=[ids],
                weights={"table": table_bytes, "norm": nw, "head": head_bytes},
                want=[tol(want, 1e-5, 1e-5 * np.sqrt(D))], flags=flags)


def cases():
    dot, nodot = "integer-dot=true", "integer-dot=false"
    out = []
    for f, tag in ((dot, "dot"), (nodot, "nodot")):
        out += [
            case_products(1, 1, 64, 128, f"decode-product-16-lanes-{tag}", f),
            case_products(1, 1, 2048, 96, f"decode-product-32-lanes-{tag}", f),
            case_products(1, 1, 4096, 64, f"decode-product-64-lanes-{tag}", f),
            case_attention_layer(1, 1, 7, f"decode-attention-layer-{tag}", f),
            case_mlp(1, 1, f"decode-mlp-{tag}", f),
        ]
    out += [
        case_products(4, 3, 80, 40, "few-tokens-product", dot),
        case_products(100, 37, 64, 132, "prefill-product-tiled", dot),
        case_products(64, 64, 192, 96, "prefill-product-tiled-full", dot),
        case_attention_layer(16, 11, 5, "prefill-attention-layer", dot),
        case_mlp(16, 13, "prefill-mlp", dot),
        case_embed_head(1, 1, 1, 300, 64, "f32", "decode-embed-head-f32", dot),
        case_embed_head(4, 3, 1, 300, 64, "bf16", "decode-embed-head-bf16", dot),
        case_embed_head(16, 9, 9, 300, 64, "bf16", "prefill-embed-head-bf16", dot),
        case_embed_head(8, 7, 2, 300, 64, "f32", "embed-head-row-ranges",
                        dot + " max-binding-bytes=16384"),
    ]
    return out


# ------------------------------------------------------------- the runner --

def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:2])}: exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r.stdout


def lower(case, bin_dir, work):
    src = os.path.join(work, "case.mlir")
    with open(src, "w") as f:
        f.write(case.mlir)
    opt = os.path.join(bin_dir, "tlc-opt")
    formed = run([opt, src, f"-tlc-gpu-form-dispatches={case.flags}"])
    with open(os.path.join(work, "dispatches.mlir"), "w") as f:
        f.write(formed)
    spirv = run([opt, os.path.join(work, "dispatches.mlir"), "-tlc-vulkan-lower-to-spirv"])
    m = re.search(r"^  spirv\.module .*?^  }$", spirv, re.S | re.M)
    with open(os.path.join(work, "kernels.spv.mlir"), "w") as f:
        f.write(m.group(0) + "\n")
    run(["mlir-translate", "--no-implicit-module", "--serialize-spirv",
         os.path.join(work, "kernels.spv.mlir"), "-o", os.path.join(work, "kernels.spv")])
    return formed


def plan(case, formed, work):
    """The plan vulkan_run takes: a buffer per value, dispatches in order."""
    func = re.search(r"func\.func @f\((.*?)\) ->.*?\n(.*?)\n  }\n", formed, re.S)
    params = {}  # kernel -> its buffer types
    for k, sig in re.findall(r"gpu\.func @(\w+)\((.*?)\) kernel", formed):
        params[k] = re.findall(r"%\w+: (memref<(?:[^<>]|<[^<>]*>)*>)", sig)
    lines, kernels = [], []
    values = {}  # value -> [bytes, initial contents or None]

    def put(name, data):
        values[name] = [len(data), data]

    tm = int(re.search(r"tlora.max_tokens = (\d+)", formed).group(1))
    for i, (name, ty) in enumerate(re.findall(r"(%\w+): ([^,]+)", func.group(1))):
        if ty.startswith("tensor"):
            a = np.asarray(case.args[i])
            pad = np.zeros((tm,) + a.shape[1:], a.dtype)
            pad[: a.shape[0]] = a
            put(name, pad.tobytes())
    views = {}
    for line in func.group(2).splitlines():
        line = line.strip()
        if m := re.match(r'(%\w+) = tlora\.ternary_weight "(\w+)" scale\(([^)]*)\)', line):
            put(m.group(1), pack_t2_rows(case.weights[m.group(2)], float(m.group(3))))
        elif m := re.match(r'(%\w+) = tlora\.weight "(\w+)"', line):
            w = case.weights[m.group(2)]
            put(m.group(1), w if isinstance(w, bytes) else np.asarray(w, np.float32).tobytes())
        elif m := re.match(r'(%\w+) = tlora\.kv_cache "(\w+)"', line):
            put(m.group(1), np.asarray(case.caches[m.group(2)], np.float32).tobytes())
            views[m.group(2)] = m.group(1)
        elif m := re.match(r"(%\w+) = tlora\.weight_rows (%\w+)\[(\d+)\] : tensor<(\d+)x(.*?)> -> tensor<(\d+)x", line):
            size, data = values[m.group(2)]
            row, first = size // int(m.group(4)), int(m.group(3))
            put(m.group(1), data[first * row:(first + int(m.group(6))) * row])
        elif m := re.match(r"(?:(%\w+)(?::(\d+))? = )?tlora\.dispatch @kernels::@(\w+)\((.*?)\) workload\((\d+) \* T \+ (-?\d+)\)", line):
            k = m.group(3)
            if k not in kernels:
                kernels.append(k)
            operands = [o.strip() for o in m.group(4).split(",") if o.strip()]
            n = 0 if not m.group(1) else int(m.group(2) or 1)
            results = [m.group(1)] if n == 1 else [f"{m.group(1)}#{j}" for j in range(n)]
            for j, o in enumerate(operands):  # a kernel may read past the data
                values[o][0] = max(values[o][0], memref_bytes(params[k][j]))
            for j, r in enumerate(results):
                values[r] = [memref_bytes(params[k][len(operands) + j]), None]
            lines.append(f"dispatch {kernels.index(k)} {m.group(5)} {m.group(6)} "
                         + " ".join(o.replace("%", "v").replace("#", "_") for o in operands + results))
        elif m := re.match(r"return (.*?) :", line):
            returns = [r.strip() for r in m.group(1).split(",")]
        elif re.match(r"(%\w+ = )?(arith|tlora)\.", line):
            raise RuntimeError(f"an op the GPU lowering left on the host: {line}")
    out = [f"kernel {k} {os.path.join(work, 'kernels.spv')}" for k in kernels]
    for i, (v, (size, data)) in enumerate(values.items()):
        path = ""
        if data is not None:
            path = os.path.join(work, f"in{i}.bin")
            with open(path, "wb") as f:
                f.write(data + bytes(size - len(data)))
        out.append(f"buffer {v.replace('%', 'v').replace('#', '_')} {size} {path}".rstrip())
    out += lines
    out.append(f"args {case.T} {case.pos} {case.rows}")
    reads = [(r, os.path.join(work, f"out{i}.bin")) for i, r in enumerate(returns)]
    reads += [(views[c], os.path.join(work, f"cache_{c}.bin")) for c in case.want_caches]
    out += [f"read {v.replace('%', 'v').replace('#', '_')} {p}" for v, p in reads]
    with open(os.path.join(work, "plan.txt"), "w") as f:
        f.write("\n".join(out) + "\n")
    return [p for _, p in reads], len(lines)


def compare(label, got, want_tol):
    want, tolerance = want_tol
    got = got[: want.size].reshape(want.shape).astype(np.float64)
    err = np.abs(got - want)
    bad = ~(err <= tolerance)
    worst = float((err / np.maximum(tolerance, 1e-30)).max())
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape)
        return False, f"{label}: {bad.sum()} of {bad.size} out of tolerance, first at {i}: {got[i]!r} vs {want[i]!r}"
    return True, f"{label} max|err|={float(err.max()):.2e} ({worst:.2f} of tolerance)"


def check(case, bin_dir, work):
    formed = lower(case, bin_dir, work)
    outputs, ndispatch = plan(case, formed, work)
    run([os.path.join(bin_dir, "vulkan_run"), os.path.join(work, "plan.txt")])
    wants = case.want + [case.want_caches[c] for c in case.want_caches]
    labels = [f"result {i}" for i in range(len(case.want))] + [f"cache {c}" for c in case.want_caches]
    ok, notes = True, []
    for label, path, want in zip(labels, outputs, wants):
        got = np.fromfile(path, np.float32)
        good, note = compare(label, got, want)
        ok &= good
        notes.append(note)
    kernels = sorted(set(re.findall(r"tlora\.dispatch @kernels::@(\w+)", formed)))
    return ok, f"{ndispatch} dispatches ({', '.join(kernels)}); " + "; ".join(notes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the build's bin folder (tlc-opt, vulkan_run)")
    ap.add_argument("--case", help="run only the cases whose name contains this")
    ap.add_argument("--keep", help="write each case's files under this folder")
    a = ap.parse_args()
    failures = 0
    selected = [c for c in cases() if not a.case or a.case in c.name]
    for case in selected:
        with tempfile.TemporaryDirectory() as tmp:
            work = os.path.join(a.keep, case.name) if a.keep else tmp
            os.makedirs(work, exist_ok=True)
            try:
                ok, note = check(case, a.bin, work)
            except Exception as e:  # noqa: BLE001 - reported per case
                ok, note = False, f"error: {e}"
        failures += not ok
        print(f"{case.name}: {'PASS' if ok else 'FAIL'}: {note}", flush=True)
    print(f"{len(selected)} cases, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
