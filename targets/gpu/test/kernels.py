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

def quantize(x, margin=2e-4):
    """Per-token absmax int8 (tlora.quantize), in float32 as the kernels do:
    (codes, s, ties) where ties counts the codes of each row within `margin`
    of a rounding tie (a last-bit difference in x may move them by one; x
    computed by float kernels before, such as attention, takes 1e-3)."""
    x = np.asarray(x, np.float32)
    amax = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
    s = np.float32(127) / amax
    v = x * s
    q = np.clip(np.rint(v), -128, 127)
    ties = (np.abs(np.abs(v - np.floor(v)) - 0.5) < margin).sum(axis=-1)
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


def untied(T, d, reference):
    """Inputs x [T x d] whose quantized values all lie away from rounding
    ties, so each stage's reference holds to float32 rounding: the rows
    where reference(x) -> (result, tied rows) reports one are drawn again
    (until none; later rows may read them). Returns (x, result)."""
    x = acts(T, d)
    for _ in range(1000):
        result, tied = reference(x)
        if not tied.any():
            return x, result
        x[tied] = acts(int(tied.sum()), d)
    raise RuntimeError("no input without rounding ties")


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
    x, xq = untied(T, K, lambda x: (q := quantize(x), q[2] > 0))
    y = ternary(xq, (codes, 1.25))  # exact sums: only the scaling rounds
    mlir = f"""
func.func @f(%x: tensor<?x{K}xf32>, %pos: index, %rows: index) -> tensor<?x{N}xf32> attributes {{tlora.max_tokens = {tm} : i64}} {{
  %w = tlora.ternary_weight "w" scale(1.25) source(packed) : !tlora.ternary<outFeatures = {N}, inFeatures = {K}>
  %q = tlora.quantize %x : tensor<?x{K}xf32> -> !tlora.qact<features = {K}>
  %y = tlora.ternary_matmul %q, %w : !tlora.qact<features = {K}>, !tlora.ternary<outFeatures = {N}, inFeatures = {K}> -> tensor<?x{N}xf32>
  return %y : tensor<?x{N}xf32>
}}"""
    return Case(name, mlir, T, args=[x], weights={"w": codes},
                want=[tol(y, 1e-6, 1e-6)], flags=flags)


def case_attention_layer(tm, T, pos, name, flags, hd=16):
    """A decoder layer's attention half: RMSNorm + quantize, q/k/v products
    (one kernel), rope of q and k, KV append, GQA attention, attn sub-norm,
    o_proj with the residual added; caches hold random rows before pos.
    Inputs come from untied."""
    H, KVH, S, theta = 4, 2, 32, 500000.0
    D, DKV = H * hd, KVH * hd
    nw, nw_bytes = bf16(rng.uniform(0.5, 1.5, D))
    sw, sw_bytes = bf16(rng.uniform(0.5, 1.5, D))
    wq, wk, wv, wo = (ternary_codes(n, D) for n in (D, DKV, DKV, D))
    kc0 = rng.uniform(-1, 1, (S, DKV)).astype(np.float32)
    vc0 = rng.uniform(-1, 1, (S, DKV)).astype(np.float32)
    def reference(x):
        xq = quantize(rms_norm(x, nw).astype(np.float32))
        q, k, v = (ternary(xq, w) for w in ((wq, 1.5), (wk, 0.75), (wv, 2.0)))
        q, k = rope(q, pos, hd, theta), rope(k, pos, hd, theta)
        kc, vc = kc0.astype(np.float64), vc0.astype(np.float64)
        kc[pos:pos + T], vc[pos:pos + T] = k, v
        # attention's float sums round differently: a wider margin
        aq = quantize(rms_norm(attention(q, kc, vc, pos, hd, 0.25), sw).astype(np.float32), 1e-3)
        return (kc, vc, aq), (xq[2] > 0) | (aq[2] > 0)

    x, (kc, vc, aq) = untied(T, D, reference)
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
    inputs from untied."""
    D, F = 64, 160
    nw, nw_bytes = bf16(rng.uniform(0.5, 1.5, D))
    fw = rng.uniform(0.5, 1.5, F).astype(np.float32)
    wg, wu, wd = ternary_codes(F, D), ternary_codes(F, D), ternary_codes(D, F)
    def reference(x):
        xq = quantize(rms_norm(x, nw).astype(np.float32))
        m = np.maximum(ternary(xq, (wg, 1.5)), 0) ** 2 * ternary(xq, (wu, 0.5))
        mq = quantize(rms_norm(m, fw).astype(np.float32), 1e-3)
        return mq, (xq[2] > 0) | (mq[2] > 0)

    x, mq = untied(T, D, reference)
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



def lora_grads(x, A, B, dy, scaling):
    """Adjoints of y = scaling * (x A^T) B^T: dx, dA, dB."""
    x, A, B, dy = (np.asarray(v, np.float64) for v in (x, A, B, dy))
    g = scaling * dy @ B  # [T x r]
    return g @ A, g.T @ x, scaling * dy.T @ (x @ A.T)


def causal_attention(q, k, v, hd, seq, scale):
    """Attention within each sequence of `seq` tokens, its lse and the
    probabilities [heads][T x T] (zero outside a token's causal window)."""
    T = q.shape[0]
    H, KVH = q.shape[1] // hd, k.shape[1] // hd
    out, lse, probs = np.zeros(q.shape), np.zeros((T, H)), []
    seq_of = np.arange(T) // seq
    mask = (seq_of[:, None] == seq_of[None, :]) & (np.arange(T)[:, None] >= np.arange(T)[None, :])
    for h in range(H):
        g = h // (H // KVH)
        qh, kh, vh = (a[:, j * hd:(j + 1) * hd].astype(np.float64) for a, j in ((q, h), (k, g), (v, g)))
        s = np.where(mask, qh @ kh.T * scale, -np.inf)
        m = s.max(axis=1, keepdims=True)
        e = np.exp(s - m)
        lse[:, h] = (m + np.log(e.sum(axis=1, keepdims=True)))[:, 0]
        p = e / e.sum(axis=1, keepdims=True)
        out[:, h * hd:(h + 1) * hd] = p @ vh
        probs.append(p)
    return out, lse, probs


def causal_attention_grads(q, k, v, out, probs, dout, hd, scale):
    H, KVH = q.shape[1] // hd, k.shape[1] // hd
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    for h in range(H):
        g, p = h // (H // KVH), probs[h]
        sl, gl = slice(h * hd, (h + 1) * hd), slice(g * hd, (g + 1) * hd)
        do = dout[:, sl].astype(np.float64)
        dv[:, gl] += p.T @ do
        dp = do @ v[:, gl].astype(np.float64).T
        ds = p * (dp - (do * out[:, sl]).sum(axis=1, keepdims=True))
        dq[:, sl] = scale * ds @ k[:, gl].astype(np.float64)
        dk[:, gl] += scale * ds.T @ q[:, sl].astype(np.float64)
    return dq, dk, dv


def case_lora(tm, T, name):
    """A LoRA branch and its adjoints (x, A, B)."""
    K, N, R, scaling = 64, 96, 4, 2.0
    x, dy = acts(T, K), acts(T, N, 1.0)
    A = rng.uniform(-0.5, 0.5, (R, K)).astype(np.float32)
    B = rng.uniform(-0.5, 0.5, (N, R)).astype(np.float32)
    y = scaling * (x.astype(np.float64) @ A.T) @ B.T
    dx, dA, dB = lora_grads(x, A, B, dy, scaling)
    mlir = f"""
func.func @f(%x: tensor<?x{K}xf32>, %dy: tensor<?x{N}xf32>, %pos: index, %rows: index) -> (tensor<?x{N}xf32>, tensor<?x{K}xf32>, tensor<{R}x{K}xf32>, tensor<{N}x{R}xf32>) attributes {{tlora.max_tokens = {tm} : i64}} {{
  %a = tlora.trainable "lora_A" : tensor<{R}x{K}xf32>
  %b = tlora.trainable "lora_B" : tensor<{N}x{R}xf32>
  %y = tlora.lora %x, %a, %b scaling({scaling}) : tensor<?x{K}xf32>, tensor<{R}x{K}xf32>, tensor<{N}x{R}xf32> -> tensor<?x{N}xf32>
  %dx, %da, %db = tlora.lora_grad %x, %a, %b, %dy scaling({scaling}) : (tensor<?x{K}xf32>, tensor<{R}x{K}xf32>, tensor<{N}x{R}xf32>, tensor<?x{N}xf32>) -> (tensor<?x{K}xf32>, tensor<{R}x{K}xf32>, tensor<{N}x{R}xf32>)
  return %y, %dx, %da, %db : tensor<?x{N}xf32>, tensor<?x{K}xf32>, tensor<{R}x{K}xf32>, tensor<{N}x{R}xf32>
}}"""
    return Case(name, mlir, T, args=[x, dy], weights={"lora_A": A, "lora_B": B},
                want=[tol(y), tol(dx), tol(dA, abs_=1e-4), tol(dB, abs_=1e-4)])


def case_backward(tm, T, name):
    """The frozen layers' backward: dY . W * gamma on the packed ternary
    weights, RMSNorm's and relu(gate)^2 * up's adjoints."""
    D, F = 64, 160
    dy, x, g, u, dm = acts(T, D, 1.0), acts(T, D), acts(T, F), acts(T, F), acts(T, F, 1.0)
    w, w_bytes = bf16(rng.uniform(0.5, 1.5, D))
    codes = ternary_codes(D, F)
    dxt = dy.astype(np.float64) @ codes.astype(np.float64) * 1.5
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    r = np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + 1e-5)
    dxn = w * dy64 / r - x64 * (w * dy64 * x64).sum(axis=1, keepdims=True) / (D * r ** 3)
    relu = np.maximum(g.astype(np.float64), 0)
    dg, du = 2 * relu * u * dm, relu ** 2 * dm
    mlir = f"""
func.func @f(%dy: tensor<?x{D}xf32>, %x: tensor<?x{D}xf32>, %g: tensor<?x{F}xf32>, %u: tensor<?x{F}xf32>, %dm: tensor<?x{F}xf32>, %pos: index, %rows: index) -> (tensor<?x{F}xf32>, tensor<?x{D}xf32>, tensor<?x{F}xf32>, tensor<?x{F}xf32>) attributes {{tlora.max_tokens = {tm} : i64}} {{
  %w = tlora.ternary_weight "w" scale(1.5) source(packed) : !tlora.ternary<outFeatures = {D}, inFeatures = {F}>
  %dxt = tlora.ternary_matmul_transposed %dy, %w : tensor<?x{D}xf32>, !tlora.ternary<outFeatures = {D}, inFeatures = {F}> -> tensor<?x{F}xf32>
  %nw = tlora.weight "norm" : tensor<{D}xbf16>
  %dxn = tlora.rms_norm_grad %x, %nw, %dy eps(1.0e-5) : (tensor<?x{D}xf32>, tensor<{D}xbf16>, tensor<?x{D}xf32>) -> tensor<?x{D}xf32>
  %dg, %du = tlora.squared_relu_mul_grad %g, %u, %dm : (tensor<?x{F}xf32>, tensor<?x{F}xf32>, tensor<?x{F}xf32>) -> (tensor<?x{F}xf32>, tensor<?x{F}xf32>)
  return %dxt, %dxn, %dg, %du : tensor<?x{F}xf32>, tensor<?x{D}xf32>, tensor<?x{F}xf32>, tensor<?x{F}xf32>
}}"""
    return Case(name, mlir, T, args=[dy, x, g, u, dm], weights={"w": codes, "norm": w_bytes},
                want=[tol(dxt), tol(dxn), tol(dg), tol(du)])


def case_causal_attention(tm, T, seq, name):
    """Training attention over sequences of `seq` tokens (GQA), its lse, and
    the adjoints of q, k and v."""
    H, KVH, hd, scale = 4, 2, 16, 0.25
    q, k, v, do = acts(T, H * hd), acts(T, KVH * hd), acts(T, KVH * hd), acts(T, H * hd, 1.0)
    out, lse, probs = causal_attention(q, k, v, hd, seq, scale)
    dq, dk, dv = causal_attention_grads(q, k, v, out, probs, do, hd, scale)
    DQ, DKV = H * hd, KVH * hd
    mlir = f"""
func.func @f(%q: tensor<?x{DQ}xf32>, %k: tensor<?x{DKV}xf32>, %v: tensor<?x{DKV}xf32>, %do: tensor<?x{DQ}xf32>, %pos: index, %rows: index) -> (tensor<?x{DQ}xf32>, tensor<?x{H}xf32>, tensor<?x{DQ}xf32>, tensor<?x{DKV}xf32>, tensor<?x{DKV}xf32>) attributes {{tlora.max_tokens = {tm} : i64}} {{
  %o, %lse = tlora.causal_attention %q, %k, %v head_dim({hd}) seq_len({seq}) scale({scale}) : tensor<?x{DQ}xf32>, tensor<?x{DKV}xf32> -> tensor<?x{DQ}xf32>, tensor<?x{H}xf32>
  %dq, %dk, %dv = tlora.causal_attention_grad %q, %k, %v, %o, %lse, %do head_dim({hd}) seq_len({seq}) scale({scale}) : (tensor<?x{DQ}xf32>, tensor<?x{DKV}xf32>, tensor<?x{DKV}xf32>, tensor<?x{DQ}xf32>, tensor<?x{H}xf32>, tensor<?x{DQ}xf32>) -> (tensor<?x{DQ}xf32>, tensor<?x{DKV}xf32>, tensor<?x{DKV}xf32>)
  return %o, %lse, %dq, %dk, %dv : tensor<?x{DQ}xf32>, tensor<?x{H}xf32>, tensor<?x{DQ}xf32>, tensor<?x{DKV}xf32>, tensor<?x{DKV}xf32>
}}"""
    return Case(name, mlir, T, args=[q, k, v, do],
                want=[tol(out), tol(lse), tol(dq), tol(dk), tol(dv)])


def case_cross_entropy(tm, T, V, name):
    """Cross entropy fused with the LM head (bf16), its lse and the input's
    adjoint; the last token has no label (-1)."""
    D = 64
    x, dloss = acts(T, D), rng.uniform(0.1, 1.0, T).astype(np.float32)
    W, W_bytes = bf16(rng.uniform(-1, 1, (V, D)))
    labels = rng.integers(0, V, size=T).astype(np.int32)
    labels[-1] = -1
    logits = x.astype(np.float64) @ W.T.astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    valid = labels >= 0
    loss = np.where(valid, lse - logits[np.arange(T), np.maximum(labels, 0)], 0.0)
    p = np.exp(logits - lse[:, None])
    p[np.arange(T), np.maximum(labels, 0)] -= 1.0
    dx = np.where(valid[:, None], dloss[:, None] * (p @ W.astype(np.float64)), 0.0)
    mlir = f"""
func.func @f(%x: tensor<?x{D}xf32>, %labels: tensor<?xi32>, %dloss: tensor<?xf32>, %pos: index, %rows: index) -> (tensor<?xf32>, tensor<?xf32>, tensor<?x{D}xf32>) attributes {{tlora.max_tokens = {tm} : i64}} {{
  %w = tlora.weight "head" : tensor<{V}x{D}xbf16>
  %loss, %lse = tlora.cross_entropy %x, %w, %labels : (tensor<?x{D}xf32>, tensor<{V}x{D}xbf16>, tensor<?xi32>) -> (tensor<?xf32>, tensor<?xf32>)
  %dx = tlora.cross_entropy_grad %x, %w, %labels, %lse, %dloss : (tensor<?x{D}xf32>, tensor<{V}x{D}xbf16>, tensor<?xi32>, tensor<?xf32>, tensor<?xf32>) -> tensor<?x{D}xf32>
  return %loss, %lse, %dx : tensor<?xf32>, tensor<?xf32>, tensor<?x{D}xf32>
}}"""
    # lse is compared on the labelled tokens (the first T - 1)
    return Case(name, mlir, T, args=[x, labels, dloss], weights={"head": W_bytes},
                want=[tol(loss), tol(lse[:-1]), tol(dx)])

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
        case_products(100, 70, 160, 132, "prefill-product-tiled-nodot", nodot),
        case_products(512, 500, 128, 2048, "prefill-product-tiled-64", dot),
        case_products(100, 90, 160, 40, "prefill-product-tiled-32-short", dot),
        case_products(512, 450, 80, 2000, "prefill-product-tiled-64-edges", dot),
        case_attention_layer(16, 11, 5, "prefill-attention-layer", dot),
        case_attention_layer(16, 14, 9, "prefill-attention-layer-hd64", dot, hd=64),
        case_mlp(16, 13, "prefill-mlp", dot),
        case_embed_head(1, 1, 1, 300, 64, "f32", "decode-embed-head-f32", dot),
        case_embed_head(4, 3, 1, 300, 64, "bf16", "decode-embed-head-bf16", dot),
        case_embed_head(16, 9, 9, 300, 64, "bf16", "prefill-embed-head-bf16", dot),
        case_embed_head(8, 7, 2, 300, 64, "f32", "embed-head-row-ranges",
                        dot + " max-binding-bytes=16384"),
        # training: fewer than 16 tokens take the untiled kernels
        case_lora(12, 12, "train-lora-untiled"),
        case_lora(48, 48, "train-lora-tiled"),
        case_backward(12, 12, "train-backward-untiled"),
        case_backward(48, 48, "train-backward-tiled"),
        case_causal_attention(12, 12, 6, "train-attention-untiled"),
        case_causal_attention(48, 48, 24, "train-attention-tiled"),
        case_cross_entropy(12, 12, 512, "train-cross-entropy-untiled"),
        case_cross_entropy(48, 48, 700, "train-cross-entropy-tiled"),
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
        if ty.startswith("tensor<?"):  # token rows: tm of them
            a = np.asarray(case.args[i])
            pad = np.zeros((tm,) + a.shape[1:], a.dtype)
            pad[: a.shape[0]] = a
            put(name, pad.tobytes())
    views = {}
    for line in func.group(2).splitlines():
        line = line.strip()
        if m := re.match(r'(%\w+) = tlora\.ternary_weight "(\w+)" scale\(([^)]*)\)', line):
            put(m.group(1), pack_t2_rows(case.weights[m.group(2)], float(m.group(3))))
        elif m := re.match(r'(%\w+) = tlora\.(?:weight|trainable) "(\w+)"', line):
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
            for j, r in enumerate(results):  # NaN: unwritten values show
                size = memref_bytes(params[k][len(operands) + j])
                values[r] = [size, b"\xff" * size]
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
    assert len(outputs) == len(wants), "a result or cache without a reference"
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
