// tlc-gpu-form-dispatches: tlora compute ops -> dispatches of per-shape
// gpu.func kernels, built with MLIR builders. One kernel formation for every
// GPU target: a backend converts the gpu.module (SPIR-V for Vulkan; NVVM and
// ROCDL next) and chooses nothing here but its weight encodings.
//
// A workgroup of kWorkgroupSize invocations handles one work unit (a token
// row for the kernels below); its invocations stride over the row. Decode
// kernels that gain from more invocations declare their own workgroup size
// (KernelSpec::workgroupSize: the RMSNorm + quantize and the products).
#include "targets/gpu/KernelBuilder.h"
#include "targets/gpu/Passes.h"

#include "compiler/target/TargetBackend.h"
#include "dialects/tlora/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>

namespace tlc::gpu {
#define GEN_PASS_DEF_FORMGPUDISPATCHESPASS
#include "targets/gpu/Passes.h.inc"
} // namespace tlc::gpu

using namespace mlir;
using namespace mlir::tlora;
using namespace tlc::gpu;

namespace {
/// Ternary weights on the GPU (ternaryEncoding in Passes.h): a 64-byte
/// header holding gamma, then each row's 2-bit codes (value + 1) in words
/// of sixteen, element 4a + b of a word at bits 8b + 2a (little-endian).
int64_t rowMajorBytes(int64_t outFeatures, int64_t inFeatures) {
  return 64 + outFeatures * ((inFeatures + 15) / 16 * 4);
}
void rowMajorPack(const int8_t *codes, int64_t outFeatures, int64_t inFeatures,
                  float gamma, uint8_t *out) {
  std::memcpy(out, &gamma, sizeof gamma);
  int64_t rowBytes = (inFeatures + 15) / 16 * 4;
  for (int64_t n = 0; n < outFeatures; ++n)
    for (int64_t k = 0; k < inFeatures; ++k) {
      int64_t i = k % 16;
      out[64 + n * rowBytes + k / 16 * 4 + i % 4] |=
          (uint8_t)((codes[n * inFeatures + k] + 1) << (2 * (i / 4)));
    }
}

} // namespace

const tlc::TernaryEncoding &tlc::gpu::ternaryEncoding() {
  static const tlc::TernaryEncoding e = {"t2-rows", rowMajorBytes,
                                         rowMajorPack};
  return e;
}

namespace {
//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

/// out[t, :] = table[ids[t], :] as f32; one token per workgroup.
KernelSpec embedKernel(EmbedOp e, int64_t tm, int64_t maxBinding) {
  auto table = cast<ShapedType>(e.getTable().getType());
  int64_t V = table.getDimSize(0), D = table.getDimSize(1);
  Type et = table.getElementType(), f32 = Float32Type::get(e.getContext());
  KernelSpec k;
  k.name =
      llvm::formatv("embed_v{0}_d{1}_{2}", V, D, et.isBF16() ? "bf16" : "f32");
  RowChunks chunks = rowChunks(table, maxBinding);
  addWeightChunks(k, 0, table, chunks);
  k.buffers.append({MemRefType::get({tm}, IntegerType::get(e.getContext(), 32)),
                    rowsOf(tm, D, f32)});
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    int64_t n = chunks.count();
    ValueRange w = a.buffers.take_front(n);
    Value id = arith::IndexCastOp::create(
        b, loc, b.getIndexType(),
        memref::LoadOp::create(b, loc, a.buffers[n], a.unit));
    if (tm < kTiledMinTokens && D % kWorkgroupSize == 0 && D <= kFlatFoldMax) {
      // A few tokens: the row's range chosen once, then every load of the
      // invocation's elements before its stores (all in flight).
      forRowChunk(
          b, loc, w, chunks, id,
          [&](OpBuilder &b, Location loc, Value wc, Value local) {
            TLC_E(b, loc);
            SmallVector<std::pair<Value, Value>> row;
            for (int64_t j = 0; j < D / kWorkgroupSize; ++j) {
              Value d = e.iadd(a.lane, e.c(j * kWorkgroupSize));
              row.push_back({d, loadWeight(b, loc, wc, et, {local, d},
                                           e.iadd(e.imul(local, e.c(D)), d))});
            }
            for (auto [d, v] : row)
              e.st(v, a.buffers[n + 1], {a.unit, d});
          });
      return;
    }
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      Value v = loadWeightAt(b, loc, w, chunks, et, id, d);
      memref::StoreOp::create(b, loc, v, a.buffers[n + 1], {a.unit, d});
    });
  };
  return k;
}

/// out[t, :] = w * x[t, :] / sqrt(mean(x[t, :]^2) + eps): each invocation
/// sums its strided squares, workgroupReduce adds them, all scale their
/// elements. For a few tokens each of a row's workgroups sums the whole row
/// (in the same order, so all get the same scale) and scales its slice.
/// 1 / sqrt(mean(x[t, :]^2) + eps) for a row of D: strided sums of
/// squares (unrolled whole for a few tokens), added in lane order.
Value rmsScaleOf(OpBuilder &b, Location loc, const KernelArgs &a, Value sum,
                 int64_t D, float eps);
Value rmsScale(OpBuilder &b, Location loc, const KernelArgs &a, Value x,
               Value t, int64_t D, float eps, bool sliced) {
  Value fzero = f32Const(b, loc, 0.0f);
  auto square = [&](OpBuilder &b, Location loc, Value d, Value acc) -> Value {
    Value v = memref::LoadOp::create(b, loc, x, {t, d});
    return arith::AddFOp::create(b, loc, acc,
                                 arith::MulFOp::create(b, loc, v, v));
  };
  Value sum =
      sliced && D <= kFlatFoldMax
          ? stridedFoldFlat(b, loc, a.lane, D, fzero, square)
          : stridedFold(b, loc, a.lane, indexConst(b, loc, D), fzero, square);
  return rmsScaleOf(b, loc, a, sum, D, eps);
}

/// The scale of rmsScale from each invocation's sum of squares.
Value rmsScaleOf(OpBuilder &b, Location loc, const KernelArgs &a, Value sum,
                 int64_t D, float eps) {
  Value total =
      workgroupReduce(b, loc, reduceScratch(b, loc), a.lane, sum, addF);
  Value mean = arith::DivFOp::create(b, loc, total, f32Const(b, loc, (float)D));
  return arith::DivFOp::create(
      b, loc, f32Const(b, loc, 1.0f),
      math::SqrtOp::create(
          b, loc, arith::AddFOp::create(b, loc, mean, f32Const(b, loc, eps))));
}

/// `kind`_d<D>_<weight type>_eps<bits>: one kernel per norm shape.
std::string normName(StringRef kind, RMSNormOp n) {
  Type et = cast<ShapedType>(n.getWeight().getType()).getElementType();
  float eps = n.getEpsilon().convertToFloat();
  return llvm::formatv("{0}_d{1}_{2}_eps{3}", kind, dim(n.getInput(), 1),
                       et.isBF16() ? "bf16" : "f32",
                       llvm::utohexstr(llvm::bit_cast<uint32_t>(eps)));
}

KernelSpec rmsNormKernel(RMSNormOp n, int64_t tm) {
  int64_t D = dim(n.getInput(), 1);
  auto wt = cast<ShapedType>(n.getWeight().getType());
  Type et = wt.getElementType();
  float eps = n.getEpsilon().convertToFloat();
  MLIRContext *ctx = n.getContext();
  Type f32 = Float32Type::get(ctx);
  KernelSpec k;
  k.name = normName("rms_norm", n);
  k.buffers = {rowsOf(tm, D, f32), weightBuffer(wt), rowsOf(tm, D, f32)};
  bool sliced = tm < kTiledMinTokens;
  if (sliced)
    k.tokensFactor = rowSliceGroups(D);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value x = a.buffers[0], w = a.buffers[1], out = a.buffers[2];
    Value r =
        rmsScale(b, loc, a, x, rowToken(b, loc, a, D, sliced), D, eps, sliced);
    forRowElements(b, loc, a, D, sliced, [&](OpBuilder &b, Value t, Value d) {
      Value v = memref::LoadOp::create(b, loc, x, {t, d});
      Value wf = loadWeight(b, loc, w, et, {d}, d);
      Value h = arith::MulFOp::create(b, loc, v, r);
      memref::StoreOp::create(b, loc, arith::MulFOp::create(b, loc, wf, h), out,
                              {t, d});
    });
  };
  return k;
}

/// An elementwise kernel over [T x D] rows: out = fn(a, b); a few tokens'
/// rows are spread over many workgroups (forRowElements).
KernelSpec elementwiseKernel(
    std::string name, int64_t D, int64_t tm, MLIRContext *ctx,
    std::function<Value(OpBuilder &, Location, Value, Value)> fn) {
  KernelSpec k;
  k.name = std::move(name);
  Type buf = rowsOf(tm, D, Float32Type::get(ctx));
  k.buffers = {buf, buf, buf};
  bool sliced = tm < kTiledMinTokens;
  if (sliced)
    k.tokensFactor = rowSliceGroups(D);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forRowElements(b, loc, a, D, sliced, [&](OpBuilder &b, Value t, Value d) {
      Value x = memref::LoadOp::create(b, loc, a.buffers[0], {t, d});
      Value y = memref::LoadOp::create(b, loc, a.buffers[1], {t, d});
      memref::StoreOp::create(b, loc, fn(b, loc, x, y), a.buffers[2], {t, d});
    });
  };
  return k;
}

/// cache[pos + t, :] = x[t, :].
KernelSpec kvAppendKernel(int64_t S, int64_t D, int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("kv_append_s{0}_d{1}", S, D);
  Type f32 = Float32Type::get(ctx);
  k.buffers = {rowsOf(S, D, f32), rowsOf(tm, D, f32)};
  bool sliced = tm < kTiledMinTokens;
  if (sliced)
    k.tokensFactor = rowSliceGroups(D);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forRowElements(b, loc, a, D, sliced, [&](OpBuilder &b, Value t, Value d) {
      Value v = memref::LoadOp::create(b, loc, a.buffers[1], {t, d});
      Value p = arith::AddIOp::create(b, loc, a.pos, t);
      memref::StoreOp::create(b, loc, v, a.buffers[0], {p, d});
    });
  };
  return k;
}

/// Quantized activations on the GPU: [TM x K/4] words of four int8 values
/// (byte i of word w is x_q[4w + i]), then TM words holding 1/s as f32.
Type qactBuffer(int64_t tm, int64_t K, MLIRContext *ctx) {
  return MemRefType::get({tm * K / 4 + tm}, IntegerType::get(ctx, 32));
}

/// x_q = clamp(roundeven(x * s), -128, 127), s = 127 / max(max|x|, 1e-5),
/// as the CPU kernels and transformers compute it; one token per workgroup.
/// Quantizes row t (rowToken(K / 4)) of the values elementAt(t, i), i < K,
/// into q (qactBuffer's layout): the absolute maximum over the row, then
/// each invocation packs its words (for a few tokens, this workgroup's
/// slice).
void quantizeRow(
    OpBuilder &b, Location loc, const KernelArgs &a, int64_t K, int64_t tm,
    bool sliced, Value t, Value q,
    function_ref<Value(OpBuilder &, Location, Value, Value)> elementAt) {
  auto absMax = [&](OpBuilder &b, Location loc, Value i, Value acc) -> Value {
    return maxF(b, loc, acc,
                math::AbsFOp::create(b, loc, elementAt(b, loc, t, i)));
  };
  Value partial =
      sliced && K <= kFlatFoldMax
          ? stridedFoldFlat(b, loc, a.lane, K, f32Const(b, loc, 0), absMax)
          : stridedFold(b, loc, a.lane, indexConst(b, loc, K),
                        f32Const(b, loc, 0), absMax);
  Value amax =
      workgroupReduce(b, loc, reduceScratch(b, loc), a.lane, partial, maxF);
  Value scale =
      arith::DivFOp::create(b, loc, f32Const(b, loc, 127.0f),
                            maxF(b, loc, amax, f32Const(b, loc, 1e-5f)));
  // The row's first invocation (of its first workgroup) stores 1/s.
  Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, a.lane,
                                      indexConst(b, loc, 0));
  if (sliced)
    first = arith::AndIOp::create(
        b, loc, first,
        arith::CmpIOp::create(
            b, loc, arith::CmpIPredicate::eq,
            arith::RemUIOp::create(b, loc, a.unit,
                                   indexConst(b, loc, rowSliceGroups(K / 4))),
            indexConst(b, loc, 0)));
  when(b, loc, first, [&](OpBuilder &b, Location loc) {
    Value inv = arith::DivFOp::create(b, loc, f32Const(b, loc, 1.0f), scale);
    Value at = arith::AddIOp::create(b, loc, indexConst(b, loc, tm * K / 4), t);
    memref::StoreOp::create(
        b, loc, arith::BitcastOp::create(b, loc, b.getI32Type(), inv), q, at);
  });
  forRowElements(b, loc, a, K / 4, sliced, [&](OpBuilder &b, Value t, Value w) {
    TLC_E(b, loc);
    SmallVector<Value> four;
    for (int i = 0; i < 4; ++i)
      four.push_back(elementAt(b, loc, t, e.iadd(e.imul(w, e.c(4)), e.c(i))));
    e.st(quantizeWord(b, loc, four, scale), q,
         e.iadd(e.imul(t, e.c(K / 4)), w));
  });
}

KernelSpec quantizeKernel(int64_t K, int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("quantize_k{0}", K);
  k.buffers = {rowsOf(tm, K, Float32Type::get(ctx)), qactBuffer(tm, K, ctx)};
  bool sliced = tm < kTiledMinTokens;
  if (sliced)
    k.tokensFactor = rowSliceGroups(K / 4);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value x = a.buffers[0];
    quantizeRow(b, loc, a, K, tm, sliced, rowToken(b, loc, a, K / 4, sliced),
                a.buffers[1],
                [&](OpBuilder &b, Location loc, Value t, Value i) -> Value {
                  return memref::LoadOp::create(b, loc, x, {t, i});
                });
  };
  return k;
}

/// RMSNorm then quantization of a few tokens' rows when the norm feeds
/// nothing else (decode), one workgroup of kNormLanes invocations per token.
/// Invocation l holds vectors v = l, l + kNormLanes, ... of the row (four
/// elements each, the weights beside them) in registers: its sum of
/// squares, vector after vector, then wideReduce; the normalized elements
/// w * (x * r) as rmsNormKernel computes them, their absolute maximum, and
/// word v of the quantized row (quantizeRow's codes) from the same
/// registers. Each invocation has few loads in flight: with 64 invocations
/// and one element a load, the 2560 row took 7.3 us and 6912 13.5 us on
/// the H200.
inline constexpr int64_t kNormLanes = 256;
/// Rows up to this many elements (32 vectors an invocation).
inline constexpr int64_t kNormQuantizeMax = 4 * kNormLanes * 32;

KernelSpec rmsNormQuantizeKernel(RMSNormOp n, int64_t tm) {
  int64_t D = dim(n.getInput(), 1), V = D / 4;
  auto wt = cast<ShapedType>(n.getWeight().getType());
  Type et = wt.getElementType();
  float eps = n.getEpsilon().convertToFloat();
  MLIRContext *ctx = n.getContext();
  Type f32 = Float32Type::get(ctx);
  auto x4 = VectorType::get({4}, f32);
  auto w4 = et.isBF16() ? VectorType::get({2}, IntegerType::get(ctx, 32)) : x4;
  KernelSpec k;
  k.name = normName("rms_norm_quantize", n);
  k.buffers = {MemRefType::get({tm * V}, x4), MemRefType::get({V}, w4),
               qactBuffer(tm, D, ctx)};
  k.workgroupSize = kNormLanes;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value x = a.buffers[0], w = a.buffers[1], q = a.buffers[2];
    Value t = a.unit, row = e.imul(t, e.c(V));
    // The invocation's vectors v < V: x[t, 4v...] and w[4v...] (zeros past
    // the row add nothing below).
    SmallVector<Value> at;
    SmallVector<SmallVector<Value>> xs, ws;
    for (int64_t j = 0; j * kNormLanes < V; ++j) {
      Value v = e.iadd(a.lane, e.c(j * kNormLanes));
      auto load = [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        return SmallVector<Value>{e.ld(x, e.iadd(row, v)), e.ld(w, v)};
      };
      SmallVector<Value> xw;
      if ((j + 1) * kNormLanes <= V) {
        xw = load(b, loc);
      } else {
        auto inside = scf::IfOp::create(
            b, loc, e.ult(v, e.c(V)),
            [&](OpBuilder &b, Location loc) {
              scf::YieldOp::create(b, loc, load(b, loc));
            },
            [&](OpBuilder &b, Location loc) {
              SmallVector<Value> zeros;
              for (VectorType type : {x4, w4})
                zeros.push_back(arith::ConstantOp::create(b, loc, type,
                                                          b.getZeroAttr(type)));
              scf::YieldOp::create(b, loc, zeros);
            });
        xw.assign(inside.getResults().begin(), inside.getResults().end());
      }
      at.push_back(v);
      SmallVector<Value> four;
      for (int64_t i = 0; i < 4; ++i)
        four.push_back(vector::ExtractOp::create(b, loc, xw[0], i));
      xs.push_back(four);
      ws.push_back(weightElements(b, loc, xw[1]));
    }
    Value scratch = wideReduceScratch(b, loc, kNormLanes);
    Value sum = e.f(0);
    for (ArrayRef<Value> four : xs)
      for (Value v : four)
        sum = e.add(sum, e.mul(v, v));
    Value total = wideReduce(b, loc, scratch, a.lane, kNormLanes, sum, addF);
    Value r =
        e.div(e.f(1.0f), e.sqrt(e.add(e.div(total, e.f((float)D)), e.f(eps))));
    Value amax = e.f(0);
    for (size_t j = 0; j < xs.size(); ++j)
      for (int64_t i = 0; i < 4; ++i) {
        xs[j][i] = e.mul(ws[j][i], e.mul(xs[j][i], r));
        amax = e.max(amax, math::AbsFOp::create(b, loc, xs[j][i]));
      }
    amax = wideReduce(b, loc, scratch, a.lane, kNormLanes, amax, maxF);
    Value scale = e.div(e.f(127.0f), e.max(amax, e.f(1e-5f)));
    when(b, loc, e.ieq(a.lane, e.c(0)), [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      e.st(arith::BitcastOp::create(b, loc, b.getI32Type(),
                                    e.div(e.f(1.0f), scale)),
           q, e.iadd(e.c(tm * V), t));
    });
    for (size_t j = 0; j < xs.size(); ++j) {
      auto store = [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        e.st(quantizeWord(b, loc, xs[j], scale), q, e.iadd(row, at[j]));
      };
      if ((int64_t)(j + 1) * kNormLanes > V)
        when(b, loc, e.ult(at[j], e.c(V)), store);
      else
        store(b, loc);
    }
  };
  return k;
}

/// inv_freq of a rotary embedding as transformers computes it in float32.
SmallVector<float> ropeInvFreq(RopeOp r) {
  int64_t hd = r.getHeadDim();
  float theta = (float)r.getTheta().convertToDouble();
  SmallVector<float> invFreq;
  for (int64_t i = 0; i < hd / 2; ++i)
    invFreq.push_back(1.0f / std::pow(theta, (float)(2 * i) / (float)hd));
  return invFreq;
}

/// Elements (x1, x2) = (i, i + head_dim / 2) of a head rotated to
/// position p (an index): x1 cos - x2 sin, x2 cos + x1 sin, the angle
/// p * invFreq[i] (i an index), sin times `sign`.
std::pair<Value, Value> rotatePair(OpBuilder &b, Location loc, Value x1,
                                   Value x2, Value p, Value i,
                                   ArrayRef<float> invFreq, float sign) {
  TLC_E(b, loc);
  Value pf = arith::SIToFPOp::create(
      b, loc, b.getF32Type(),
      arith::IndexCastOp::create(b, loc, b.getI32Type(), p));
  auto [sin0, cos] = sinCos(b, loc, e.mul(pf, constantAt(b, loc, invFreq, i)));
  Value sin = e.mul(sin0, e.f(sign));
  return {e.sub(e.mul(x1, cos), e.mul(x2, sin)),
          e.add(e.mul(x2, cos), e.mul(x1, sin))};
}

/// The rotations and cache appends after an attention's q, k and v
/// products (ProductEpilogue::AttentionInputs).
struct AttentionInputs {
  int64_t headDim, cacheRows, theta;
  SmallVector<float> invFreq;
};

/// What a decode ternary product does with its outputs (fused epilogues
/// save the launch of the elementwise op that would follow).
enum class ProductEpilogue {
  Store,          ///< y_i[t, n] for each weight i
  AddResidual,    ///< y[t, n] = r[t, n] + product (one weight; r its operand)
  SquaredReluMul, ///< y[t, n] = max(gate, 0)^2 * up (weights gate, up)
  /// Weights q, k, v: q and k rotated (rotatePair; a workgroup computes two
  /// pairs (i, i + head_dim / 2), first elements in its first two slots),
  /// k and v stored at row pos + t of the caches (operands after the
  /// weights), rotated q the result.
  AttentionInputs,
};

/// Invocations per output of a decode product (`outputs` in all, rows of
/// K/16 code words): the most, from 16 to 64, that leave each invocation at
/// least 4 words of its row and the grid within 2^18 invocations (about what
/// the H200's 132 SMs hold at once). Fewer words an invocation shorten its
/// chain of loads. On the H200 (us; 16 lanes in workgroups of 64 before):
/// down 2560 x 6912 8.5 -> 6.0 (64 lanes), q/k/v 6.2 -> 5.8 and o_proj
/// 5.2 -> 4.6 (32), gate/up 7.8 -> 7.4 (16 in workgroups of 128).
int64_t productLanes(int64_t outputs, int64_t K) {
  int64_t lanes = 16;
  while (lanes < 64 && K / 16 / (2 * lanes) >= 4 &&
         outputs * 2 * lanes <= (int64_t(1) << 18))
    lanes *= 2;
  return lanes;
}

/// y[t, n] = (x_q[t] . W_t[n]) * gamma / s[t], exact in int32. The weights
/// are the t2-rows encoding (ternaryEncoding, Passes.h): 16 words of header
/// (gamma first), then per row K/16 words of sixteen 2-bit codes. Several
/// weights that share the input (q, k, v; gate, up) are one kernel, a range
/// of workgroups each. For a few tokens (decode): a
/// workgroup computes `slots` outputs of one token, `lanes` invocations
/// each (productLanes; workgroups of max(128, 4 lanes)), which read
/// consecutive code words of their row (coalesced) with the 16 activations
/// of each word as one 16-byte vector, and add their int32 partial sums in
/// workgroup memory (exact, so in any order). Up to 65535 workgroups;
/// beyond, each loops over groups of outputs. `epilogue` may add a residual
/// to the one product, or combine gate and up (SquaredReluMul: gate in the
/// first half of the slots, up in the second).
KernelSpec
ternaryMatmulKernel(ArrayRef<int64_t> Ns, int64_t K, int64_t tm,
                    MLIRContext *ctx, bool integerDot,
                    ProductEpilogue epilogue = ProductEpilogue::Store,
                    std::optional<AttentionInputs> attn = std::nullopt) {
  int64_t outputs = 0;
  for (int64_t N : Ns)
    outputs += N * tm;
  const int64_t lanes = productLanes(outputs, K);
  const int64_t groupSize = std::max<int64_t>(128, 4 * lanes);
  const int64_t slots = groupSize / lanes;
  bool gated = epilogue == ProductEpilogue::SquaredReluMul;
  bool residual = epilogue == ProductEpilogue::AddResidual;
  assert((epilogue == ProductEpilogue::AttentionInputs) == attn.has_value() &&
         (!attn || (Ns.size() == 3 && attn->headDim % 4 == 0)) &&
         "attention inputs need q, k, v and an even number of pairs");
  assert((!gated || (Ns.size() == 2 && Ns[0] == Ns[1])) &&
         (!residual || Ns.size() == 1) && "epilogue of the wrong products");
  KernelSpec k;
  k.name = "ternary_matmul";
  for (int64_t N : Ns)
    k.name += "_n" + std::to_string(N);
  k.name += "_k" + std::to_string(K);
  k.name += gated ? "_squared_relu_mul" : residual ? "_add" : "";
  if (attn)
    k.name += llvm::formatv("_rope_hd{0}_theta{1}_append_s{2}", attn->headDim,
                            attn->theta, attn->cacheRows);
  Type i32 = IntegerType::get(ctx, 32), f32 = Float32Type::get(ctx);
  k.workgroupSize = groupSize;
  k.buffers = {
      MemRefType::get({tm * K / 16 + (tm + 3) / 4}, VectorType::get({4}, i32))};
  for (int64_t N : Ns)
    k.buffers.push_back(MemRefType::get({16 + N * K / 16}, i32));
  if (residual)
    k.buffers.push_back(rowsOf(tm, Ns[0], f32));
  if (attn)
    k.buffers.append({rowsOf(attn->cacheRows, Ns[1], f32),
                      rowsOf(attn->cacheRows, Ns[2], f32)});
  for (int64_t N : gated || attn ? Ns.take_front() : Ns)
    k.buffers.push_back(rowsOf(tm, N, f32));
  // Workgroups [ends[i-1], ends[i]) of a token compute weight i's outputs
  // (gated: one range, two outputs of each weight per workgroup).
  int64_t perGroup = gated ? slots / 2 : slots;
  SmallVector<int64_t> ends;
  for (int64_t N : gated ? Ns.take_front() : Ns)
    ends.push_back((ends.empty() ? 0 : ends.back()) +
                   (N + perGroup - 1) / perGroup);
  int64_t perToken = ends.back();
  constexpr int64_t kMaxGroups = 65535;
  bool direct = perToken * tm <= kMaxGroups; // one workgroup per group
  k.tokensFactor = direct ? perToken : 0;
  k.constant = direct ? 0 : kMaxGroups;
  std::vector<int64_t> sizes(Ns.begin(), Ns.end());
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    int64_t count = sizes.size();
    Value q = a.buffers[0];
    ValueRange weights = a.buffers.slice(1, count);
    Value residualIn = residual ? a.buffers[1 + count] : Value();
    ValueRange outputs =
        a.buffers.drop_front(1 + count + (residual ? 1 : 0) + (attn ? 2 : 0));
    Value scratch = allocWorkgroup(b, loc, groupSize, b.getI32Type());
    Value sub = e.irem(a.lane, e.c(lanes));
    Value slot = e.idiv(a.lane, e.c(lanes));
    // This invocation's int32 partial of x_q[t] . W[row] (its words of the
    // row, strided by lanes).
    auto partial = [&](OpBuilder &b, Location loc, Value w, Value t,
                       Value row) -> Value {
      TLC_E(b, loc);
      Value wRow = e.iadd(e.c(16), e.imul(row, e.c(K / 16)));
      Value qRow = e.imul(t, e.c(K / 16));
      auto words = [&](OpBuilder &b, Location loc, Value j,
                       Value sum) -> Value {
        TLC_E(b, loc);
        Value codes = e.ld(w, e.iadd(wRow, j));
        Value x16 = e.ld(q, e.iadd(qRow, j));
        for (int quarter = 0; quarter < 4; ++quarter) {
          Value xs = vector::ExtractOp::create(b, loc, x16, quarter);
          if (integerDot) { // four weights in one instruction
            sum = e.iadd(
                sum, dot4(b, loc, ternaryBytes(b, loc, codes, quarter), xs));
            continue;
          }
          for (int i = 0; i < 4; ++i)
            sum =
                e.iadd(sum, e.imul(byteOf(b, loc, xs, i),
                                   ternaryAt(b, loc, codes, 4 * quarter + i)));
        }
        return sum;
      };
      // A row's words unrolled (all loads in flight) up to the flat limit.
      Value zero = i32Const(b, loc, 0);
      return K / 16 <= kFlatFoldMax / kWorkgroupSize * lanes
                 ? stridedFoldFlat(b, loc, sub, K / 16, zero, words, lanes)
                 : foldStep(b, loc, sub, e.c(K / 16), lanes, zero, words);
    };
    // The float output of the lanes partials in scratch from
    // `first` on: their exact sum times gamma / s[t].
    auto output = [&](OpBuilder &b, Location loc, Value w, Value t,
                      Value first) -> Value {
      TLC_E(b, loc);
      Value total = e.ld(scratch, first);
      for (int64_t i = 1; i < lanes; ++i)
        total = e.iadd(total, e.ld(scratch, e.iadd(first, e.c(i))));
      Value gamma =
          arith::BitcastOp::create(b, loc, b.getF32Type(), e.ld(w, e.c(0)));
      // 1/s[t]: word t % 4 of vector tm * K / 16 + t / 4.
      Value inv4 = e.ld(q, e.iadd(e.c(tm * K / 16), e.idiv(t, e.c(4))));
      Value invBits = vector::ExtractOp::create(b, loc, inv4, 0);
      for (int64_t i = 1; i < 4; ++i)
        invBits = e.sel(e.ieq(e.irem(t, e.c(4)), e.c(i)),
                        vector::ExtractOp::create(b, loc, inv4, i), invBits);
      Value inv = arith::BitcastOp::create(b, loc, b.getF32Type(), invBits);
      return e.mul(arith::SIToFPOp::create(b, loc, b.getF32Type(), total),
                   e.mul(gamma, inv));
    };
    // Output n (< N, else row 0 read and nothing stored) of group g.
    auto rowOf = [&](OpBuilder &b, Location loc, Value n, int64_t N) {
      TLC_E(b, loc);
      Value valid = e.ult(n, e.c(N));
      return std::make_pair(valid, e.sel(valid, n, e.c(0)));
    };
    // Weight i's group g (< its group count) of token t.
    // Weight i's group g of token t with AttentionInputs: v's outputs go
    // to its cache; q's and k's are two pairs (slots 0, 1 the first
    // elements, 2, 3 the second), rotated by the first two slots' leaders.
    auto attentionProduct = [&](OpBuilder &b, Location loc, int64_t i, Value t,
                                Value g) {
      TLC_E(b, loc);
      int64_t hd = attn->headDim, half = hd / 2;
      Value kCache = a.buffers[1 + count], vCache = a.buffers[2 + count];
      Value cacheRow = e.iadd(a.pos, t);
      bool rotated = i < 2;
      Value n;
      int64_t pairs = slots / 2;
      if (rotated) {
        Value pair = e.iadd(e.imul(g, e.c(pairs)), e.irem(slot, e.c(pairs)));
        n = e.iadd(e.iadd(e.imul(e.idiv(pair, e.c(half)), e.c(hd)),
                          e.irem(pair, e.c(half))),
                   e.sel(e.ult(slot, e.c(pairs)), e.c(0), e.c(half)));
      } else {
        n = e.iadd(e.imul(g, e.c(slots)), slot);
      }
      auto [valid, row] = rowOf(b, loc, n, sizes[i]);
      e.st(partial(b, loc, weights[i], t, row), scratch, a.lane);
      mlir::gpu::BarrierOp::create(b, loc);
      Value leader = arith::AndIOp::create(b, loc, valid, e.ieq(sub, e.c(0)));
      if (rotated)
        leader = arith::AndIOp::create(b, loc, leader, e.ult(slot, e.c(pairs)));
      when(b, loc, leader, [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        Value x1 = output(b, loc, weights[i], t, a.lane);
        if (!rotated)
          return e.st(x1, vCache, {cacheRow, n});
        Value x2 =
            output(b, loc, weights[i], t, e.iadd(a.lane, e.c(pairs * lanes)));
        auto [o1, o2] = rotatePair(b, loc, x1, x2, cacheRow, e.irem(n, e.c(hd)),
                                   attn->invFreq, 1.0f);
        Value dest = i == 0 ? outputs[0] : kCache;
        Value destRow = i == 0 ? t : cacheRow;
        e.st(o1, dest, {destRow, n});
        e.st(o2, dest, {destRow, e.iadd(n, e.c(half))});
      });
      mlir::gpu::BarrierOp::create(b, loc);
    };
    auto product = [&](OpBuilder &b, Location loc, int64_t i, Value t,
                       Value g) {
      if (attn)
        return attentionProduct(b, loc, i, t, g);
      TLC_E(b, loc);
      Value n = e.iadd(e.imul(g, e.c(slots)), slot);
      auto [valid, row] = rowOf(b, loc, n, sizes[i]);
      e.st(partial(b, loc, weights[i], t, row), scratch, a.lane);
      mlir::gpu::BarrierOp::create(b, loc);
      when(b, loc, arith::AndIOp::create(b, loc, valid, e.ieq(sub, e.c(0))),
           [&](OpBuilder &b, Location loc) {
             TLC_E(b, loc);
             Value y = output(b, loc, weights[i], t, a.lane);
             if (residual)
               y = e.add(e.ld(residualIn, {t, n}), y);
             e.st(y, outputs[i], {t, n});
           });
      // The scratch is read before the next group overwrites it.
      mlir::gpu::BarrierOp::create(b, loc);
    };
    // Group g of gate and up: slots 0, 1 gate outputs 2g, 2g + 1 and
    // slots 2, 3 up's (a branch uniform over each 32 invocations).
    auto gatedProduct = [&](OpBuilder &b, Location loc, Value t, Value g) {
      TLC_E(b, loc);
      int64_t each = slots / 2;
      Value n = e.iadd(e.imul(g, e.c(each)), e.irem(slot, e.c(each)));
      auto [valid, row] = rowOf(b, loc, n, sizes[0]);
      auto ifOp = scf::IfOp::create(
          b, loc, e.ult(slot, e.c(each)),
          [&](OpBuilder &b, Location loc) {
            scf::YieldOp::create(b, loc, partial(b, loc, weights[0], t, row));
          },
          [&](OpBuilder &b, Location loc) {
            scf::YieldOp::create(b, loc, partial(b, loc, weights[1], t, row));
          });
      e.st(ifOp.getResult(0), scratch, a.lane);
      mlir::gpu::BarrierOp::create(b, loc);
      Value leader = arith::AndIOp::create(
          b, loc, valid,
          arith::AndIOp::create(b, loc, e.ieq(sub, e.c(0)),
                                e.ult(slot, e.c(each))));
      when(b, loc, leader, [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        Value gate = output(b, loc, weights[0], t, a.lane);
        Value up =
            output(b, loc, weights[1], t, e.iadd(a.lane, e.c(each * lanes)));
        Value r = e.max(gate, e.f(0));
        e.st(e.mul(e.mul(r, r), up), outputs[0], {t, n});
      });
      mlir::gpu::BarrierOp::create(b, loc);
    };
    // The weight is the same for the whole workgroup: a uniform branch.
    auto group = [&](OpBuilder &b, Location loc, Value item) {
      TLC_E(b, loc);
      Value t = e.idiv(item, e.c(perToken));
      Value g = e.irem(item, e.c(perToken));
      if (gated)
        return gatedProduct(b, loc, t, g);
      inRange(b, loc, g, ends,
              [&](OpBuilder &b, Location loc, int64_t i, Value local) {
                product(b, loc, i, t, local);
              });
    };
    if (direct) {
      group(b, loc, a.unit);
      return;
    }
    Value groups = e.imul(a.T, e.c(perToken));
    scf::ForOp::create(b, loc, a.unit, groups, e.c(kMaxGroups), ValueRange{},
                       [&](OpBuilder &b, Location loc, Value item, ValueRange) {
                         group(b, loc, item);
                         scf::YieldOp::create(b, loc);
                       });
  };
  return k;
}

/// The same product for many tokens, tiled: a workgroup per 64 tokens x
/// 64 outputs. With the integer dot product (tiledDotProduct), per block of
/// 64 inputs (16 where K is not a multiple of 64) its invocations stage the
/// tile's rows of activations as they are (packed int8, coalesced:
/// consecutive invocations read consecutive words of a row) and its rows'
/// code words as packed int8 -1/0/1, and sum exactly in i32; where 64 x 64
/// tiles would leave fewer than kFewTiles workgroups (short outputs such as
/// k/v, o_proj), tiles of 32 x 32, four times as many. Without
/// (tiledProduct), 64 x 64 tiles per block of 16 inputs, both decoded to
/// floats: sums of int8 x ternary products below 2^24 are exact in f32.
/// Either way the result equals ternaryMatmulKernel's bit for bit.
constexpr int64_t kFewTiles = 256;
KernelSpec ternaryMatmulTiledKernel(int64_t N, int64_t K, int64_t tm,
                                    MLIRContext *ctx, bool integerDot) {
  auto tiles = [&](int64_t tile) {
    return (tm + tile - 1) / tile * ((N + tile - 1) / tile);
  };
  const int64_t micro = integerDot && tiles(kTile) < kFewTiles ? 4 : kMicro;
  const int64_t tile = kMicro * micro;
  KernelSpec k;
  k.name = llvm::formatv("ternary_matmul_tiled_n{0}_k{1}{2}", N, K,
                         !integerDot         ? ""
                         : micro == kMicro ? "_dot"
                                           : "_dot32");
  Type i32 = IntegerType::get(ctx, 32);
  k.buffers = {qactBuffer(tm, K, ctx), MemRefType::get({16 + N * K / 16}, i32),
               rowsOf(tm, N, Float32Type::get(ctx))};
  tileWorkload(k, tm, N, tile);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value q = a.buffers[0], w = a.buffers[1], y = a.buffers[2];
    auto toF32 = [&](OpBuilder &b, Location loc, Value v) -> Value {
      return arith::SIToFPOp::create(b, loc, b.getF32Type(), v);
    };
    forOutputTile(
        b, loc, a, N, [&](OpBuilder &b, Location loc, Value row0, Value col0) {
          TLC_E(b, loc);
          // Words of activations (4 values) per staged block.
          const int64_t words = K % 64 == 0 ? 16 : 4, stride = tile + 1;
          // fn(i) for i < n, spread over the workgroup's invocations.
          using IndexFn = function_ref<void(OpBuilder &, Location, Value)>;
          auto spread = [&](OpBuilder &b, Location loc, int64_t n,
                            IndexFn fn) {
            TLC_E(b, loc);
            for (int64_t r = 0; r * kWorkgroupSize < n; ++r) {
              Value i = e.iadd(e.c(r * kWorkgroupSize), a.lane);
              if ((r + 1) * kWorkgroupSize <= n)
                fn(b, loc, i);
              else
                when(b, loc, e.ult(i, e.c(n)),
                     [&](OpBuilder &b, Location loc) { fn(b, loc, i); });
            }
          };
          auto fillWords = [&](OpBuilder &b, Location loc, Value kb,
                               Value aWords, Value bWords) {
            // Activations: word i of the tile's rows x words, row i / words.
            spread(b, loc, tile * words, [&](OpBuilder &b, Location loc,
                                             Value i) {
              TLC_E(b, loc);
              Value row = e.idiv(i, e.c(words)), word = e.irem(i, e.c(words));
              Value t = arith::MinUIOp::create(b, loc, e.iadd(row0, row),
                                               e.c(tm - 1));
              Value v = e.ld(q, e.iadd(e.imul(t, e.c(K / 4)),
                                       e.iadd(e.imul(kb, e.c(words)), word)));
              e.st(v, aWords, e.iadd(e.imul(word, e.c(stride)), row));
            });
            // Weights: code word c (16 values: activation words 4c .. 4c + 3)
            // of the tile's columns x words / 4, column i / (words / 4).
            const int64_t codeWords = words / 4;
            spread(b, loc, tile * codeWords, [&](OpBuilder &b, Location loc,
                                                 Value i) {
              TLC_E(b, loc);
              Value col = e.idiv(i, e.c(codeWords));
              Value c = e.irem(i, e.c(codeWords));
              Value n = arith::MinUIOp::create(b, loc, e.iadd(col0, col),
                                               e.c(N - 1));
              Value codes = e.ld(
                  w, e.iadd(e.iadd(e.c(16), e.imul(n, e.c(K / 16))),
                            e.iadd(e.imul(kb, e.c(codeWords)), c)));
              for (int64_t quarter = 0; quarter < 4; ++quarter) {
                Value word = e.iadd(e.imul(c, e.c(4)), e.c(quarter));
                e.st(ternaryBytes(b, loc, codes, quarter), bWords,
                     e.iadd(e.imul(word, e.c(stride)), col));
              }
            });
          };
          auto fill = [&](OpBuilder &b, Location loc, Value kb, Value aTile,
                          Value bTile) {
            TLC_E(b, loc);
            for (int64_t r = 0; r < 4; ++r) {
              // Word w4 of the block's 4 in tile row r * 16 + lane / 4.
              Value row = e.iadd(e.c(r * 16), e.idiv(a.lane, e.c(4)));
              Value w4 = e.irem(a.lane, e.c(4));
              Value t = arith::MinUIOp::create(b, loc, e.iadd(row0, row),
                                               e.c(tm - 1));
              Value word = e.ld(q, e.iadd(e.imul(t, e.c(K / 4)),
                                          e.iadd(e.imul(kb, e.c(4)), w4)));
              for (int i = 0; i < 4; ++i)
                e.st(toF32(b, loc, byteOf(b, loc, word, i)), aTile,
                     e.iadd(
                         e.imul(e.iadd(e.imul(w4, e.c(4)), e.c(i)), e.c(kTile)),
                         row));
            }
            Value n = arith::MinUIOp::create(b, loc, e.iadd(col0, a.lane),
                                             e.c(N - 1));
            Value codes =
                e.ld(w, e.iadd(e.iadd(e.c(16), e.imul(n, e.c(K / 16))), kb));
            for (int64_t kk = 0; kk < 16; ++kk)
              e.st(toF32(b, loc, ternaryAt(b, loc, codes, kk)), bTile,
                   e.iadd(e.c(kk * kTile), a.lane));
          };
          TileResult r =
              integerDot
                  ? tiledDotProduct(b, loc, a.lane, K / 4 / words, words,
                                    micro, fillWords)
                  : tiledProduct(b, loc, a.lane, K / 16, fill);
          if (integerDot)
            for (Value &v : r.acc)
              v = toF32(b, loc, v);
          Value gamma =
              arith::BitcastOp::create(b, loc, b.getF32Type(), e.ld(w, e.c(0)));
          for (int64_t i = 0; i < micro; ++i) {
            Value t = e.iadd(row0, r.row(b, loc, i));
            when(b, loc, e.ult(t, a.T), [&](OpBuilder &b, Location loc) {
              TLC_E(b, loc);
              Value inv = arith::BitcastOp::create(
                  b, loc, b.getF32Type(), e.ld(q, e.iadd(e.c(tm * K / 4), t)));
              Value scale = e.mul(gamma, inv);
              for (int64_t j = 0; j < micro; ++j) {
                Value n = e.iadd(col0, r.col(b, loc, j));
                when(b, loc, e.ult(n, e.c(N)), [&](OpBuilder &b, Location loc) {
                  TLC_E(b, loc);
                  e.st(e.mul(r.acc[i * micro + j], scale), y, {t, n});
                });
              }
            });
          }
        },
        tile);
  };
  return k;
}

/// The LM head: y[r, n] = x[T - rows + r] . W[n] for r < rows. One
/// workgroup per vocabulary row n (at most 4096 workgroups, each looping
/// over rows n): its invocations read consecutive elements of W[n]
/// (coalesced; a row of up to kFlatFoldMax unrolled whole, all loads in
/// flight) and the workgroup adds their f32 partial sums in lane order.
KernelSpec denseKernel(DenseOp d, int64_t tm, int64_t maxBinding) {
  auto wt = cast<ShapedType>(d.getWeight().getType());
  int64_t N = wt.getDimSize(0), K = wt.getDimSize(1);
  Type et = wt.getElementType(), f32 = Float32Type::get(d.getContext());
  // Rows of a multiple of 16 bytes are read 16 bytes per load (eight bf16
  // or four f32 weights): each invocation sums its vectors' elements in
  // order, vector after vector (lane, lane + 64, ...). Narrow loads of
  // strided elements reached 2.1 TB/s on the H200's 128256 x 2560 bf16 head.
  int64_t perVector = et.isBF16() ? 8 : 4;
  bool wide = K % perVector == 0;
  KernelSpec k;
  k.name =
      llvm::formatv("dense_n{0}_k{1}_{2}", N, K, et.isBF16() ? "bf16" : "f32");
  if (wide)
    k.name += "_v16";
  auto x4 = VectorType::get({4}, f32);
  k.buffers = {wide ? Type(MemRefType::get({tm * K / 4}, x4))
                    : Type(rowsOf(tm, K, f32))};
  RowChunks chunks = rowChunks(wt, maxBinding);
  addWeightChunks(k, 1, wt, chunks, wide);
  k.buffers.push_back(rowsOf(tm, N, f32));
  k.tokensFactor = 0;
  k.constant = std::min<int64_t>(N, 4096);
  int64_t groups = k.constant;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    int64_t c = chunks.count();
    Value x = a.buffers[0], y = a.buffers[1 + c];
    ValueRange w = a.buffers.slice(1, c);
    Value scratch = reduceScratch(b, loc);
    Value first = arith::SubIOp::create(b, loc, a.T, a.rows);
    Value isFirst = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                          a.lane, indexConst(b, loc, 0));
    // This invocation's part of row `local` of chunk `wc` . x[t].
    auto narrow = [&](OpBuilder &b, Location loc, Value t, Value wc,
                      Value local) -> Value {
      Value rowStart =
          arith::MulIOp::create(b, loc, local, indexConst(b, loc, K));
      auto product = [&](OpBuilder &b, Location loc, Value kk,
                         Value acc) -> Value {
        Value xv = memref::LoadOp::create(b, loc, x, {t, kk});
        Value wv = loadWeight(b, loc, wc, et, {local, kk},
                              arith::AddIOp::create(b, loc, rowStart, kk));
        return arith::AddFOp::create(b, loc, acc,
                                     arith::MulFOp::create(b, loc, xv, wv));
      };
      Value zero = f32Const(b, loc, 0);
      return K <= kFlatFoldMax
                 ? stridedFoldFlat(b, loc, a.lane, K, zero, product)
                 : stridedFold(b, loc, a.lane, indexConst(b, loc, K), zero,
                               product);
    };
    auto vectors = [&](OpBuilder &b, Location loc, Value t, Value wc,
                       Value local) -> Value {
      TLC_E(b, loc);
      int64_t rowVectors = K / perVector;
      Value rowStart = e.imul(local, e.c(rowVectors));
      Value xRow = e.imul(t, e.c(K / 4));
      auto product = [&](OpBuilder &b, Location loc, Value v,
                         Value acc) -> Value {
        TLC_E(b, loc);
        SmallVector<Value> ws =
            weightElements(b, loc, e.ld(wc, e.iadd(rowStart, v)));
        Value xs;
        for (int64_t i = 0; i < perVector; ++i) {
          if (i % 4 == 0)
            xs = e.ld(x, e.iadd(xRow, e.iadd(e.imul(v, e.c(perVector / 4)),
                                             e.c(i / 4))));
          Value xv = vector::ExtractOp::create(b, loc, xs, i % 4);
          acc = e.add(acc, e.mul(xv, ws[i]));
        }
        return acc;
      };
      Value zero = e.f(0);
      return rowVectors <= kFlatFoldMax
                 ? stridedFoldFlat(b, loc, a.lane, rowVectors, zero, product)
                 : stridedFold(b, loc, a.lane, e.c(rowVectors), zero, product);
    };
    scf::ForOp::create(
        b, loc, a.unit, indexConst(b, loc, N), indexConst(b, loc, groups),
        ValueRange{}, [&](OpBuilder &b, Location loc, Value n, ValueRange) {
          scf::ForOp::create(
              b, loc, indexConst(b, loc, 0), a.rows, indexConst(b, loc, 1),
              ValueRange{},
              [&](OpBuilder &b, Location loc, Value r, ValueRange) {
                Value t = arith::AddIOp::create(b, loc, first, r);
                // The row's chunk is chosen once, so the fold's loads are
                // straight-line (a branch per element serializes them).
                Value part =
                    withRowChunk(b, loc, w, chunks, n,
                                 [&](OpBuilder &b, Location loc, Value wc,
                                     Value local) -> Value {
                                   return wide ? vectors(b, loc, t, wc, local)
                                               : narrow(b, loc, t, wc, local);
                                 });
                Value dot =
                    workgroupReduce(b, loc, scratch, a.lane, part, addF);
                when(b, loc, isFirst, [&](OpBuilder &b, Location loc) {
                  memref::StoreOp::create(b, loc, dot, y, {r, n});
                });
                scf::YieldOp::create(b, loc);
              });
          scf::YieldOp::create(b, loc);
        });
  };
  return k;
}

/// Rotary embedding (rotate_half) of every head of x at positions
/// pos + (t mod period); inv_freq as transformers computes it in float32
/// (host), the angle's sin and cos by sinCos. One token per workgroup.
/// With `cacheRows` (keys whose only use is their append), the rotated row
/// goes straight to row pos + t of the cache, its second buffer.
KernelSpec ropeKernel(RopeOp r, int64_t tm, int64_t cacheRows = 0) {
  int64_t D = dim(r.getInput(), 1), hd = r.getHeadDim(), half = hd / 2;
  double theta = r.getTheta().convertToDouble();
  SmallVector<float> invFreq = ropeInvFreq(r);
  int64_t period = r.getPeriod() ? (int64_t)*r.getPeriod() : (int64_t)1 << 30;
  float sign = r.getInverse() ? -1.0f : 1.0f;
  Type f32 = Float32Type::get(r.getContext());
  KernelSpec k;
  k.name =
      llvm::formatv("rope_d{0}_hd{1}_theta{2}{3}{4}", D, hd, (int64_t)theta,
                    r.getPeriod() ? "_p" + std::to_string(period) : "",
                    r.getInverse() ? "_inv" : "");
  if (cacheRows)
    k.name += "_append_s" + std::to_string(cacheRows);
  k.buffers = {rowsOf(tm, D, f32), rowsOf(cacheRows ? cacheRows : tm, D, f32)};
  bool sliced = tm < kTiledMinTokens;
  if (sliced)
    k.tokensFactor = rowSliceGroups(D / 2);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forRowElements(
        b, loc, a, D / 2, sliced, [&](OpBuilder &b, Value t, Value idx) {
          Value p = arith::AddIOp::create(
              b, loc, a.pos,
              arith::RemUIOp::create(b, loc, t, indexConst(b, loc, period)));
          Value head =
              arith::DivUIOp::create(b, loc, idx, indexConst(b, loc, half));
          Value i =
              arith::RemUIOp::create(b, loc, idx, indexConst(b, loc, half));
          Value i1 = arith::AddIOp::create(
              b, loc,
              arith::MulIOp::create(b, loc, head, indexConst(b, loc, hd)), i);
          Value i2 =
              arith::AddIOp::create(b, loc, i1, indexConst(b, loc, half));
          Value x1 = memref::LoadOp::create(b, loc, a.buffers[0], {t, i1});
          Value x2 = memref::LoadOp::create(b, loc, a.buffers[0], {t, i2});
          auto [o1, o2] = rotatePair(b, loc, x1, x2, p, i, invFreq, sign);
          Value row = cacheRows ? arith::AddIOp::create(b, loc, a.pos, t) : t;
          memref::StoreOp::create(b, loc, o1, a.buffers[1], {row, i1});
          memref::StoreOp::create(b, loc, o2, a.buffers[1], {row, i2});
        });
  };
  return k;
}

/// Causal attention over the KV cache: one workgroup per (token t, query
/// head h); scores of positions 0 .. pos + t in workgroup memory; softmax
/// as transformers' eager attention (scale, subtract the max, exp,
/// normalize); sums in fixed orders.
/// out[t, qBase + d] = inv * sum_j p[j] v[j, kBase + d] (j ascending) for
/// an attention row: each invocation's HD / 64 dims d = lane + 64 i in
/// one loop over positions, kUnroll at a time with their loads issued first
/// (the sums as a plain loop adds them: same order, same result; the loop
/// was a chain of dependent loads).
void weightedValues(OpBuilder &b, Location loc, const KernelArgs &a,
                    Value scores, Value vc, Value out, Value t, Value qBase,
                    Value kBase, Value len, Value inv, int64_t HD) {
  constexpr int64_t kUnroll = 8;
  TLC_E(b, loc);
  int64_t dims = HD / kWorkgroupSize;
  SmallVector<Value> cols, init;
  for (int64_t i = 0; i < dims; ++i) {
    cols.push_back(e.iadd(kBase, e.iadd(a.lane, e.c(i * kWorkgroupSize))));
    init.push_back(e.f(0));
  }
  // Steps of one position from `from` (the tail), or kUnroll at a time.
  auto accumulate = [&](OpBuilder &b, Location loc, Value j0, int64_t n,
                        ValueRange acc) {
    TLC_E(b, loc);
    SmallVector<Value> p, v;
    for (int64_t u = 0; u < n; ++u) {
      Value j = e.iadd(j0, e.c(u));
      p.push_back(e.ld(scores, j));
      for (Value c : cols)
        v.push_back(e.ld(vc, {j, c}));
    }
    SmallVector<Value> sums(acc.begin(), acc.end());
    for (int64_t u = 0; u < n; ++u)
      for (int64_t i = 0; i < dims; ++i)
        sums[i] = e.add(sums[i], e.mul(p[u], v[u * dims + i]));
    return sums;
  };
  // A loop that may run zero times takes its results from a branch (see
  // stridedFold: MLIR's SPIR-V loops leave them undefined then).
  auto loop = [&](Value lo, Value hi, int64_t step, ValueRange from) {
    auto branch = scf::IfOp::create(
        b, loc, e.ult(lo, hi),
        [&](OpBuilder &b, Location loc) {
          auto f = scf::ForOp::create(
              b, loc, lo, hi, indexConst(b, loc, step), from,
              [&](OpBuilder &b, Location loc, Value j, ValueRange acc) {
                scf::YieldOp::create(b, loc, accumulate(b, loc, j, step, acc));
              });
          scf::YieldOp::create(b, loc, f.getResults());
        },
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, from);
        });
    return SmallVector<Value>(branch.getResults());
  };
  Value whole = e.imul(e.idiv(len, e.c(kUnroll)), e.c(kUnroll));
  SmallVector<Value> sums = loop(e.c(0), whole, kUnroll, init);
  sums = loop(whole, len, 1, sums);
  for (int64_t i = 0; i < dims; ++i)
    e.st(e.mul(sums[i], inv), out,
         {t, e.iadd(qBase, e.iadd(a.lane, e.c(i * kWorkgroupSize)))});
}

FailureOr<KernelSpec> attentionKernel(AttentionOp op, int64_t tm) {
  auto c = op.getKeys().getType();
  int64_t S = c.getMaxSeq(), HD = c.getHeadDim(), KVH = c.getKvHeads();
  int64_t DQ = dim(op.getQuery(), 1), H = DQ / HD, DKV = KVH * HD;
  // Vulkan guarantees 16 KiB of workgroup memory.
  if ((S + kWorkgroupSize + 1) * 4 > 16384)
    return op->emitOpError("GPU attention keeps the scores in 16 KiB of "
                           "workgroup memory: at most ")
           << 16384 / 4 - kWorkgroupSize - 1 << " cached positions, got " << S;
  float scale = op.getScale().convertToFloat();
  Type f32 = Float32Type::get(op.getContext());
  KernelSpec k;
  k.name = llvm::formatv("attention_s{0}_h{1}_kv{2}_hd{3}", S, H, KVH, HD);
  // q and the keys are read 16 bytes per load (the same sums): unrolled
  // for a few tokens, in a loop for many (prefill 512 on the H200: 581 ->
  // 226 us per call of 256 tokens; with weightedValues, 182 us).
  bool wide = HD % 4 == 0, wideLoop = wide && tm >= kTiledMinTokens;
  auto rows4 = [&](int64_t rows, int64_t d) -> Type {
    return wide ? Type(MemRefType::get({rows * d / 4},
                                       VectorType::get({4}, f32)))
                : Type(rowsOf(rows, d, f32));
  };
  k.buffers = {rows4(tm, DQ), rows4(S, DKV), rowsOf(S, DKV, f32),
               rowsOf(tm, DQ, f32)};
  k.tokensFactor = H;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value q = a.buffers[0], kc = a.buffers[1], vc = a.buffers[2],
          out = a.buffers[3];
    Value t = arith::DivUIOp::create(b, loc, a.unit, indexConst(b, loc, H));
    Value h = arith::RemUIOp::create(b, loc, a.unit, indexConst(b, loc, H));
    Value g = arith::DivUIOp::create(b, loc, h, indexConst(b, loc, H / KVH));
    Value qBase = arith::MulIOp::create(b, loc, h, indexConst(b, loc, HD));
    Value kBase = arith::MulIOp::create(b, loc, g, indexConst(b, loc, HD));
    Value len = arith::AddIOp::create(
        b, loc, arith::AddIOp::create(b, loc, a.pos, t), indexConst(b, loc, 1));
    Value scores = allocWorkgroup(b, loc, S, b.getF32Type());
    Value scratch = reduceScratch(b, loc);
    auto strided =
        [&](OpBuilder &b, Value init,
            function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
          return stridedFold(b, loc, a.lane, len, init, fn);
        };
    Value ninf = f32Const(b, loc, -std::numeric_limits<float>::infinity());
    Value localMax = strided(
        b, ninf, [&](OpBuilder &b, Location loc, Value j, Value m) -> Value {
          // q . k over the head, d ascending. For a few tokens unrolled:
          // its loads are straight-line (all in flight; decode attention 20
          // -> 13 us on the H200; four positions' dots interleaved were
          // slower, 12 -> 21 us). Prefill keeps a loop: unrolled, its many
          // workgroups ran slower (52 -> 63 ms for 512 tokens).
          auto term = [&](OpBuilder &b, Location loc, Value d,
                          Value acc) -> Value {
            Value qv = memref::LoadOp::create(
                b, loc, q, {t, arith::AddIOp::create(b, loc, qBase, d)});
            Value kv = memref::LoadOp::create(
                b, loc, kc, {j, arith::AddIOp::create(b, loc, kBase, d)});
            return arith::AddFOp::create(b, loc, acc,
                                         arith::MulFOp::create(b, loc, qv, kv));
          };
          Value dot = f32Const(b, loc, 0);
          if (wideLoop) {
            TLC_E(b, loc);
            Value qRow = e.idiv(e.iadd(e.imul(t, e.c(DQ)), qBase), e.c(4));
            Value kRow = e.idiv(e.iadd(e.imul(j, e.c(DKV)), kBase), e.c(4));
            dot = foldRange(
                b, loc, e.c(0), e.c(HD / 4), dot,
                [&](OpBuilder &b, Location loc, Value d4, Value acc) -> Value {
                  TLC_E(b, loc);
                  Value qv = e.ld(q, e.iadd(qRow, d4));
                  Value kv = e.ld(kc, e.iadd(kRow, d4));
                  for (int64_t i = 0; i < 4; ++i)
                    acc = e.add(
                        acc, e.mul(vector::ExtractOp::create(b, loc, qv, i),
                                   vector::ExtractOp::create(b, loc, kv, i)));
                  return acc;
                });
          } else if (wide) {
            TLC_E(b, loc);
            Value qRow = e.idiv(e.iadd(e.imul(t, e.c(DQ)), qBase), e.c(4));
            Value kRow = e.idiv(e.iadd(e.imul(j, e.c(DKV)), kBase), e.c(4));
            for (int64_t d4 = 0; d4 < HD / 4; ++d4) {
              Value qv = e.ld(q, e.iadd(qRow, e.c(d4)));
              Value kv = e.ld(kc, e.iadd(kRow, e.c(d4)));
              for (int64_t i = 0; i < 4; ++i)
                dot =
                    e.add(dot, e.mul(vector::ExtractOp::create(b, loc, qv, i),
                                     vector::ExtractOp::create(b, loc, kv, i)));
            }
          } else if (tm < kTiledMinTokens) {
            for (int64_t d = 0; d < HD; ++d)
              dot = term(b, loc, indexConst(b, loc, d), dot);
          } else {
            dot = foldRange(b, loc, indexConst(b, loc, 0),
                            indexConst(b, loc, HD), dot, term);
          }
          Value sc =
              arith::MulFOp::create(b, loc, dot, f32Const(b, loc, scale));
          memref::StoreOp::create(b, loc, sc, scores, j);
          return maxF(b, loc, m, sc);
        });
    Value m = workgroupReduce(b, loc, scratch, a.lane, localMax, maxF);
    Value localSum = strided(
        b, f32Const(b, loc, 0),
        [&](OpBuilder &b, Location loc, Value j, Value acc) -> Value {
          Value e =
              expF(b, loc,
                   arith::SubFOp::create(
                       b, loc, memref::LoadOp::create(b, loc, scores, j), m));
          memref::StoreOp::create(b, loc, e, scores, j);
          return arith::AddFOp::create(b, loc, acc, e);
        });
    Value sum = workgroupReduce(b, loc, scratch, a.lane, localSum, addF);
    Value inv = arith::DivFOp::create(b, loc, f32Const(b, loc, 1.0f), sum);
    if (HD % kWorkgroupSize == 0) {
      weightedValues(b, loc, a, scores, vc, out, t, qBase, kBase, len, inv,
                     HD);
      return;
    }
    forLanes(b, loc, a.lane, HD, [&](OpBuilder &b, Value d) {
      auto acc = scf::ForOp::create(
          b, loc, indexConst(b, loc, 0), len, indexConst(b, loc, 1),
          ValueRange{f32Const(b, loc, 0)},
          [&](OpBuilder &b, Location loc, Value j, ValueRange acc) {
            Value p = memref::LoadOp::create(b, loc, scores, j);
            Value v = memref::LoadOp::create(
                b, loc, vc, {j, arith::AddIOp::create(b, loc, kBase, d)});
            scf::YieldOp::create(
                b, loc,
                ValueRange{arith::AddFOp::create(
                    b, loc, acc[0], arith::MulFOp::create(b, loc, p, v))});
          });
      memref::StoreOp::create(
          b, loc, arith::MulFOp::create(b, loc, acc.getResult(0), inv), out,
          {t, arith::AddIOp::create(b, loc, qBase, d)});
    });
  };
  return k;
}

/// A LoRA adapter's down projection u[t, r] = A[r] . x[t] (f32, lanes
/// strided over k, added in lane order): one workgroup per (t, r).
KernelSpec loraDownKernel(LoraOp l, int64_t tm) {
  auto at = cast<ShapedType>(l.getLoraA().getType());
  int64_t R = at.getDimSize(0), K = at.getDimSize(1);
  Type et = at.getElementType(), f32 = Float32Type::get(l.getContext());
  KernelSpec k;
  k.name = llvm::formatv("lora_down_r{0}_k{1}_{2}", R, K,
                         et.isBF16() ? "bf16" : "f32");
  k.buffers = {rowsOf(tm, K, f32), weightBuffer(at), rowsOf(tm, R, f32)};
  k.tokensFactor = R;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value t = arith::DivUIOp::create(b, loc, a.unit, indexConst(b, loc, R));
    Value r = arith::RemUIOp::create(b, loc, a.unit, indexConst(b, loc, R));
    Value rowA = arith::MulIOp::create(b, loc, r, indexConst(b, loc, K));
    Value partial = stridedFold(
        b, loc, a.lane, indexConst(b, loc, K), f32Const(b, loc, 0),
        [&](OpBuilder &b, Location loc, Value kk, Value acc) -> Value {
          Value xv = memref::LoadOp::create(b, loc, a.buffers[0], {t, kk});
          Value wv = loadWeight(b, loc, a.buffers[1], et, {r, kk},
                                arith::AddIOp::create(b, loc, rowA, kk));
          return arith::AddFOp::create(b, loc, acc,
                                       arith::MulFOp::create(b, loc, xv, wv));
        });
    Value u =
        workgroupReduce(b, loc, reduceScratch(b, loc), a.lane, partial, addF);
    when(b, loc,
         arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, a.lane,
                               indexConst(b, loc, 0)),
         [&](OpBuilder &b, Location loc) {
           memref::StoreOp::create(b, loc, u, a.buffers[2], {t, r});
         });
  };
  return k;
}

/// Its up projection y[t, n] = scale * (B[n] . u[t]) (r ascending): one
/// invocation per output, workgroups cover 64 outputs of one token.
KernelSpec loraUpKernel(LoraOp l, int64_t tm) {
  auto bt = cast<ShapedType>(l.getLoraB().getType());
  int64_t N = bt.getDimSize(0), R = bt.getDimSize(1);
  Type et = bt.getElementType(), f32 = Float32Type::get(l.getContext());
  float scale = l.getScaling().convertToFloat();
  KernelSpec k;
  k.name = llvm::formatv("lora_up_r{0}_n{1}_{2}_s{3}", R, N,
                         et.isBF16() ? "bf16" : "f32",
                         llvm::utohexstr(llvm::bit_cast<uint32_t>(scale)));
  k.buffers = {rowsOf(tm, R, f32), weightBuffer(bt), rowsOf(tm, N, f32)};
  k.tokensFactor = rowSliceGroups(N);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forRowElements(
        b, loc, a, N, /*sliced=*/true, [&](OpBuilder &b, Value t, Value n) {
          Value rowB = arith::MulIOp::create(b, loc, n, indexConst(b, loc, R));
          auto sum = scf::ForOp::create(
              b, loc, indexConst(b, loc, 0), indexConst(b, loc, R),
              indexConst(b, loc, 1), ValueRange{f32Const(b, loc, 0)},
              [&](OpBuilder &b, Location loc, Value r, ValueRange acc) {
                Value uv = memref::LoadOp::create(b, loc, a.buffers[0], {t, r});
                Value bv = loadWeight(b, loc, a.buffers[1], et, {n, r},
                                      arith::AddIOp::create(b, loc, rowB, r));
                scf::YieldOp::create(
                    b, loc,
                    ValueRange{arith::AddFOp::create(
                        b, loc, acc[0],
                        arith::MulFOp::create(b, loc, uv, bv))});
              });
          memref::StoreOp::create(
              b, loc,
              arith::MulFOp::create(b, loc, sum.getResult(0),
                                    f32Const(b, loc, scale)),
              a.buffers[2], {t, n});
        });
  };
  return k;
}

/// A kernel and how many of its buffers are operands (the rest results).
struct KernelPart {
  KernelSpec spec;
  unsigned operands;
};

/// Independent kernels of a few tokens as one launch: each gets a range of
/// every token's workgroups (a uniform branch) and sees its own buffers and
/// work units as when launched alone. Buffers: every part's operands, then
/// every part's results. Parts must have a per-token workload.
KernelSpec sideBySide(std::string name, ArrayRef<KernelPart> parts) {
  KernelSpec k;
  k.name = std::move(name);
  SmallVector<int64_t> ends, firstOperand, firstResult;
  int64_t operands = 0, results = 0;
  for (const KernelPart &p : parts) {
    assert(p.spec.constant == 0 && p.spec.tokensFactor > 0 &&
           p.spec.rowChunked.empty() && "not a per-token kernel");
    ends.push_back((ends.empty() ? 0 : ends.back()) + p.spec.tokensFactor);
    firstOperand.push_back(operands);
    operands += p.operands;
  }
  for (const KernelPart &p : parts) {
    firstResult.push_back(operands + results);
    results += p.spec.buffers.size() - p.operands;
    k.buffers.append(p.spec.buffers.begin(),
                     p.spec.buffers.begin() + p.operands);
  }
  for (const KernelPart &p : parts)
    k.buffers.append(p.spec.buffers.begin() + p.operands, p.spec.buffers.end());
  k.tokensFactor = ends.back();
  SmallVector<KernelPart> copies(parts.begin(), parts.end());
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value t = e.idiv(a.unit, e.c(ends.back()));
    Value g = e.irem(a.unit, e.c(ends.back()));
    inRange(b, loc, g, ends,
            [&](OpBuilder &b, Location loc, int64_t i, Value local) {
              TLC_E(b, loc);
              const KernelPart &p = copies[i];
              SmallVector<Value> buffers;
              for (unsigned j = 0; j < p.operands; ++j)
                buffers.push_back(a.buffers[firstOperand[i] + j]);
              for (size_t j = 0; j < p.spec.buffers.size() - p.operands; ++j)
                buffers.push_back(a.buffers[firstResult[i] + j]);
              KernelArgs own = a;
              own.buffers = buffers;
              own.unit = e.iadd(e.imul(t, e.c(p.spec.tokensFactor)), local);
              p.spec.body(b, loc, own);
            });
  };
  return k;
}

/// What the GPU ternary kernels need of a product's shape, or an error.
LogicalResult checkTernaryShape(TernaryMatmulOp m) {
  int64_t K = m.getWeight().getType().getInFeatures();
  if (K % 16 != 0)
    return m->emitOpError("the GPU ternary kernel needs in_features % 16 "
                          "== 0, got ")
           << K;
  if (K * 127 >= (1 << 24))
    return m->emitOpError("the GPU ternary kernel sums in f32 exactly up "
                          "to in_features 132104, got ")
           << K;
  return success();
}

/// The kernel of an op for `tm` tokens at most, or an error naming the op.
FailureOr<KernelSpec> specFor(Operation *op, int64_t tm, int64_t maxBinding,
                              bool integerDot) {
  MLIRContext *ctx = op->getContext();
  KernelSpec k;
  if (auto e = dyn_cast<EmbedOp>(op)) {
    k = embedKernel(e, tm, maxBinding);
  } else if (auto n = dyn_cast<RMSNormOp>(op)) {
    k = rmsNormKernel(n, tm);
  } else if (auto m = dyn_cast<SquaredReluMulOp>(op)) {
    int64_t D = dim(m.getResult(), 1);
    k = elementwiseKernel(
        llvm::formatv("squared_relu_mul_d{0}", D), D, tm, ctx,
        [](OpBuilder &b, Location loc, Value g, Value u) -> Value {
          Value r = arith::MaximumFOp::create(b, loc, g, f32Const(b, loc, 0));
          return arith::MulFOp::create(b, loc,
                                       arith::MulFOp::create(b, loc, r, r), u);
        });
  } else if (auto add = dyn_cast<arith::AddFOp>(op)) {
    if (!isa<RankedTensorType>(add.getType()))
      return op->emitOpError("only tensor additions are dispatched");
    int64_t D = dim(add.getResult(), 1);
    k = elementwiseKernel(
        llvm::formatv("add_d{0}", D), D, tm, ctx,
        [](OpBuilder &b, Location loc, Value x, Value y) -> Value {
          return arith::AddFOp::create(b, loc, x, y);
        });
  } else if (auto a = dyn_cast<KVAppendOp>(op)) {
    auto c = a.getCache().getType();
    k = kvAppendKernel(c.getMaxSeq(), c.getKvHeads() * c.getHeadDim(), tm, ctx);
  } else if (auto q = dyn_cast<QuantizeOp>(op)) {
    int64_t K = q.getType().getFeatures();
    if (K % 4 != 0)
      return op->emitOpError("GPU quantization needs features % 4 == 0, got ")
             << K;
    k = quantizeKernel(K, tm, ctx);
  } else if (auto m = dyn_cast<TernaryMatmulOp>(op)) {
    auto w = m.getWeight().getType();
    if (failed(checkTernaryShape(m)))
      return failure();
    // Many tokens (prefill, training): tiles; a few (decode): four
    // outputs per workgroup.
    k = tm >= kTiledMinTokens
            ? ternaryMatmulTiledKernel(w.getOutFeatures(), w.getInFeatures(),
                                       tm, ctx, integerDot)
            : ternaryMatmulKernel({w.getOutFeatures()}, w.getInFeatures(), tm,
                                  ctx, integerDot);
  } else if (auto d = dyn_cast<DenseOp>(op)) {
    Type et = d.getWeight().getType().getElementType();
    if (!et.isF32() && !et.isBF16())
      return op->emitOpError("GPU LM heads are f32 or bf16 (--lm-head=exact)");
    k = denseKernel(d, tm, maxBinding);
  } else if (auto r = dyn_cast<RopeOp>(op)) {
    k = ropeKernel(r, tm);
  } else if (auto a = dyn_cast<AttentionOp>(op)) {
    auto spec = attentionKernel(a, tm);
    if (failed(spec))
      return failure();
    k = *spec;
  } else {
    return op->emitOpError("has no GPU kernel yet");
  }
  k.name += "_t" + std::to_string(tm);
  return k;
}

struct FormGPUDispatchesPass
    : tlc::gpu::impl::FormGPUDispatchesPassBase<FormGPUDispatchesPass> {
  using FormGPUDispatchesPassBase::FormGPUDispatchesPassBase;

  void runOnOperation() override {
    ModuleOp top = getOperation();
    gpu::GPUModuleOp kernels = getOrCreateKernels(top);
    SymbolTable symbols(kernels);
    if (integerDot && !symbols.lookup(kDot4Intrinsic)) {
      OpBuilder b = OpBuilder::atBlockBegin(kernels.getBody());
      Type i32 = b.getI32Type();
      auto fn = func::FuncOp::create(b, top.getLoc(), kDot4Intrinsic,
                                     b.getFunctionType({i32, i32}, {i32}));
      fn.setPrivate();
      symbols.insert(fn);
    }
    for (auto func : top.getOps<func::FuncOp>()) {
      auto maxTokens =
          func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kMaxTokens);
      if (!maxTokens)
        continue;
      int64_t tm = maxTokens.getInt();
      Dispatcher dispatcher = [&](OpBuilder &b, const KernelSpec &spec,
                                  ValueRange operands, TypeRange results) {
        KernelSpec k = spec;
        k.name += "_t" + std::to_string(tm);
        return dispatch(b, symbols, k, operands, results, tm);
      };
      if (tm < kTiledMinTokens) {
        if (failed(fuseNormQuantize(func, symbols, tm)) ||
            failed(fuseGatedProducts(func, symbols, tm)) ||
            failed(fuseResidualProducts(func, symbols, tm)) ||
            failed(fuseAttentionProjections(func, symbols, tm)) ||
            failed(fuseSharedInputProducts(func, symbols, tm)) ||
            failed(fuseAttentionInputs(func, symbols, tm)))
          return signalPassFailure();
      }
      for (Operation &op : llvm::make_early_inc_range(func.getBody().front())) {
        if (isa<WeightOp, WeightRowsOp, TernaryWeightOp, KVCacheOp,
                func::ReturnOp, DispatchOp, TrainableOp, HyperOp, TrainStateOp,
                LossScaleOp, arith::ConstantOp>(op))
          continue;
        if (auto l = dyn_cast<LoraOp>(op)) {
          // Two kernels: the rank-R down projection, then the up projection.
          if (l.getLoraA().getType().getElementType() !=
              l.getLoraB().getType().getElementType()) {
            op.emitOpError("lora_A and lora_B must have one element type");
            return signalPassFailure();
          }
          OpBuilder b(&op);
          auto u = RankedTensorType::get(
              {ShapedType::kDynamic, dim(l.getLoraA(), 0)}, b.getF32Type());
          DispatchOp down = dispatcher(b, loraDownKernel(l, tm),
                                       {l.getInput(), l.getLoraA()}, {u});
          DispatchOp up = down ? dispatcher(b, loraUpKernel(l, tm),
                                            {down.getResult(0), l.getLoraB()},
                                            {l.getType()})
                               : nullptr;
          if (!up)
            return signalPassFailure();
          op.replaceAllUsesWith(up.getResults());
          op.erase();
          continue;
        }
        if (isTrainingOp(&op)) {
          if (failed(
                  formTrainingDispatches(&op, tm, maxBindingBytes, dispatcher)))
            return signalPassFailure();
          continue;
        }
        FailureOr<KernelSpec> spec =
            specFor(&op, tm, maxBindingBytes, integerDot);
        if (failed(spec))
          return signalPassFailure();
        SmallVector<Value> buffers;
        for (Value v : op.getOperands())
          if (!isa<IndexType>(v.getType()))
            buffers.push_back(v);
        OpBuilder b(&op);
        auto d = dispatch(b, symbols, *spec, buffers, op.getResultTypes(), tm);
        if (!d)
          return signalPassFailure();
        op.replaceAllUsesWith(d.getResults());
        op.erase();
      }
    }
  }

  /// An RMSNorm whose only user quantizes it is one dispatch for a few
  /// tokens (rmsNormQuantizeKernel): two launches fewer per block.
  LogicalResult fuseNormQuantize(func::FuncOp func, SymbolTable &symbols,
                                 int64_t tm) {
    for (auto n : llvm::make_early_inc_range(
             func.getBody().front().getOps<RMSNormOp>())) {
      int64_t D = dim(n.getInput(), 1);
      if (!n->hasOneUse() || D % 4 != 0 || D > kNormQuantizeMax)
        continue;
      auto q = dyn_cast<QuantizeOp>(*n->getUsers().begin());
      if (!q)
        continue;
      OpBuilder b(q);
      DispatchOp d =
          dispatch(b, symbols, withTokens(rmsNormQuantizeKernel(n, tm), tm),
                   {n.getInput(), n.getWeight()}, {q.getType()}, tm);
      if (!d)
        return failure();
      q->replaceAllUsesWith(d.getResults());
      q->erase();
      n->erase();
    }
    return success();
  }

  /// The product `v` comes from, if it is its only use and the product is
  /// its quantized input's only user (nothing else shares the launch).
  static TernaryMatmulOp soleProduct(Value v) {
    auto m = v.getDefiningOp<TernaryMatmulOp>();
    return m && m->hasOneUse() && m.getInput().hasOneUse() ? m : nullptr;
  }

  /// squared_relu_mul(gate product, up product) of one quantized input is
  /// one dispatch for a few tokens (ProductEpilogue::SquaredReluMul).
  LogicalResult fuseGatedProducts(func::FuncOp func, SymbolTable &symbols,
                                  int64_t tm) {
    for (auto m : llvm::make_early_inc_range(
             func.getBody().front().getOps<SquaredReluMulOp>())) {
      auto gate = m.getGate().getDefiningOp<TernaryMatmulOp>();
      auto up = m.getUp().getDefiningOp<TernaryMatmulOp>();
      if (!gate || !up || gate == up || !gate->hasOneUse() ||
          !up->hasOneUse() || gate.getInput() != up.getInput() ||
          gate.getWeight().getType() != up.getWeight().getType())
        continue;
      if (failed(checkTernaryShape(gate)))
        return failure();
      auto w = gate.getWeight().getType();
      SmallVector<Value> operands{gate.getInput(), gate.getWeight(),
                                  up.getWeight()};
      OpBuilder b(m);
      DispatchOp d =
          dispatch(b, symbols,
                   withTokens(ternaryMatmulKernel(
                                  {w.getOutFeatures(), w.getOutFeatures()},
                                  w.getInFeatures(), tm, &getContext(),
                                  integerDot, ProductEpilogue::SquaredReluMul),
                              tm),
                   operands, {m.getType()}, tm);
      if (!d)
        return failure();
      m->replaceAllUsesWith(d.getResults());
      m->erase();
      gate->erase();
      up->erase();
    }
    return success();
  }

  /// x + product (the residual after o_proj and down_proj) is one dispatch
  /// for a few tokens (ProductEpilogue::AddResidual).
  LogicalResult fuseResidualProducts(func::FuncOp func, SymbolTable &symbols,
                                     int64_t tm) {
    for (auto add : llvm::make_early_inc_range(
             func.getBody().front().getOps<arith::AddFOp>())) {
      if (!isa<RankedTensorType>(add.getType()))
        continue;
      int product = soleProduct(add.getLhs())   ? 0
                    : soleProduct(add.getRhs()) ? 1
                                                : -1;
      if (product < 0)
        continue;
      TernaryMatmulOp m = soleProduct(add->getOperand(product));
      Value residual = add->getOperand(1 - product);
      if (residual.getType() != m.getType())
        continue;
      if (failed(checkTernaryShape(m)))
        return failure();
      auto w = m.getWeight().getType();
      SmallVector<Value> operands{m.getInput(), m.getWeight(), residual};
      OpBuilder b(add);
      DispatchOp d =
          dispatch(b, symbols,
                   withTokens(ternaryMatmulKernel({w.getOutFeatures()},
                                                  w.getInFeatures(), tm,
                                                  &getContext(), integerDot,
                                                  ProductEpilogue::AddResidual),
                              tm),
                   operands, {add.getType()}, tm);
      if (!d)
        return failure();
      add->replaceAllUsesWith(d.getResults());
      add->erase();
      m->erase();
    }
    return success();
  }

  /// The q, k and v products of an attention (one quantized input, nothing
  /// else using them) with the rotations and appends after them are one
  /// dispatch for a few tokens (ProductEpilogue::AttentionInputs): one
  /// launch instead of two.
  LogicalResult fuseAttentionProjections(func::FuncOp func,
                                         SymbolTable &symbols, int64_t tm) {
    Block &body = func.getBody().front();
    for (auto att : llvm::make_early_inc_range(body.getOps<AttentionOp>())) {
      std::optional<AttentionFeed> feed = attentionFeed(att);
      if (!feed)
        continue;
      auto [keys, values, qRope, kRope] = *feed;
      auto product = [](Value v) {
        auto m = v.getDefiningOp<TernaryMatmulOp>();
        return m && m->hasOneUse() ? m : nullptr;
      };
      TernaryMatmulOp mq = product(qRope.getInput()),
                      mk = product(kRope.getInput()),
                      mv = product(values.getInput());
      if (!mq || !mk || !mv || mk.getInput() != mq.getInput() ||
          mv.getInput() != mq.getInput() ||
          !llvm::hasNItems(mq.getInput().getUses(), 3))
        continue;
      auto kc = cast<KVCacheType>(att.getKeys().getType());
      if (kc.getHeadDim() % 4 != 0)
        continue;
      if (failed(checkTernaryShape(mq)))
        return failure();
      SmallVector<int64_t> sizes;
      for (TernaryMatmulOp m : {mq, mk, mv})
        sizes.push_back(m.getWeight().getType().getOutFeatures());
      AttentionInputs spec{kc.getHeadDim(), kc.getMaxSeq(),
                           (int64_t)qRope.getTheta().convertToDouble(),
                           ropeInvFreq(qRope)};
      OpBuilder b(att);
      DispatchOp d = dispatch(
          b, symbols,
          withTokens(ternaryMatmulKernel(
                         sizes, mq.getWeight().getType().getInFeatures(), tm,
                         &getContext(), integerDot,
                         ProductEpilogue::AttentionInputs, spec),
                     tm),
          {mq.getInput(), mq.getWeight(), mk.getWeight(), mv.getWeight(),
           att.getKeys(), att.getValues()},
          {qRope.getType()}, tm);
      if (!d)
        return failure();
      att.getQueryMutable().assign(d.getResult(0));
      for (Operation *op :
           {keys.getOperation(), values.getOperation(), kRope.getOperation(),
            qRope.getOperation(), mq.getOperation(), mk.getOperation(),
            mv.getOperation()})
        op->erase();
    }
    return success();
  }

  /// The one append to `cache` before `att` when nothing but `att` and it
  /// use the cache.
  static KVAppendOp soleAppend(AttentionOp att, Value cache) {
    KVAppendOp found;
    for (Operation *u : cache.getUsers())
      if (auto a = dyn_cast<KVAppendOp>(u);
          a && a->isBeforeInBlock(att) && !found)
        found = a;
      else if (u != att.getOperation())
        return nullptr;
    return found;
  }

  /// What feeds an attention in decode: the appends of its keys (rotated)
  /// and values, and the rotations of q and k.
  struct AttentionFeed {
    KVAppendOp keys, values;
    RopeOp qRope, kRope;
  };
  /// The attention's feed where one decode kernel can take it over: each
  /// cache written once, by its append; q and k rotated and used once, at
  /// the attention's position, no period or inverse, one theta, the cache's
  /// head size; the appends at that position too.
  static std::optional<AttentionFeed> attentionFeed(AttentionOp att) {
    KVAppendOp keys = soleAppend(att, att.getKeys()),
               values = soleAppend(att, att.getValues());
    auto qRope = att.getQuery().getDefiningOp<RopeOp>();
    auto kRope = keys ? keys.getInput().getDefiningOp<RopeOp>() : nullptr;
    if (!values || !qRope || !kRope || att.getKeys() == att.getValues())
      return std::nullopt;
    auto kc = cast<KVCacheType>(att.getKeys().getType());
    bool plain = qRope->hasOneUse() && kRope->hasOneUse() &&
                 kRope.getPosition() == keys.getPosition() &&
                 qRope.getPosition() == att.getPosition() &&
                 values.getPosition() == keys.getPosition() &&
                 !kRope.getPeriod() && !qRope.getPeriod() &&
                 !kRope.getInverse() && !qRope.getInverse() &&
                 kRope.getTheta() == qRope.getTheta() &&
                 (int64_t)qRope.getHeadDim() == kc.getHeadDim() &&
                 (int64_t)kRope.getHeadDim() == kc.getHeadDim();
    if (!plain)
      return std::nullopt;
    return AttentionFeed{keys, values, qRope, kRope};
  }

  /// The rotary embeddings of queries and keys and the key and value
  /// appends before an attention are one dispatch for a few tokens
  /// (sideBySide; the rotated keys go straight into the cache).
  LogicalResult fuseAttentionInputs(func::FuncOp func, SymbolTable &symbols,
                                    int64_t tm) {
    Block &body = func.getBody().front();
    for (auto att : llvm::make_early_inc_range(body.getOps<AttentionOp>())) {
      std::optional<AttentionFeed> feed = attentionFeed(att);
      if (!feed)
        continue;
      auto [keys, values, qRope, kRope] = *feed;
      auto kc = cast<KVCacheType>(att.getKeys().getType());
      int64_t S = kc.getMaxSeq(), D = kc.getKvHeads() * kc.getHeadDim();
      KernelSpec spec = sideBySide(
          llvm::formatv("attention_inputs_q{0}_kv{1}_s{2}_hd{3}_theta{4}",
                        dim(qRope.getInput(), 1), D, S, kc.getHeadDim(),
                        (int64_t)qRope.getTheta().convertToDouble()),
          {{ropeKernel(qRope, tm), 1},
           {ropeKernel(kRope, tm, S), 2},
           {kvAppendKernel(S, D, tm, &getContext()), 2}});
      OpBuilder b(att);
      DispatchOp d =
          dispatch(b, symbols, withTokens(spec, tm),
                   {qRope.getInput(), kRope.getInput(), att.getKeys(),
                    att.getValues(), values.getInput()},
                   {qRope.getType()}, tm);
      if (!d)
        return failure();
      att.getQueryMutable().assign(d.getResult(0));
      for (Operation *op : {keys.getOperation(), values.getOperation(),
                            kRope.getOperation(), qRope.getOperation()})
        op->erase();
    }
    return success();
  }

  /// Ternary products of one quantized input (q, k and v; gate and up)
  /// become one dispatch for a few tokens: one launch instead of three,
  /// which is most of a decode step's cost. The dispatch goes where the last
  /// product was; products whose results are used before it stay apart.
  LogicalResult fuseSharedInputProducts(func::FuncOp func, SymbolTable &symbols,
                                        int64_t tm) {
    llvm::MapVector<Value, SmallVector<TernaryMatmulOp>> byInput;
    for (auto m : func.getBody().front().getOps<TernaryMatmulOp>())
      byInput[m->getOperand(0)].push_back(m);
    for (auto &[input, products] : byInput) {
      if (products.size() < 2)
        continue;
      TernaryMatmulOp last = products.back();
      auto usedEarly = [&](TernaryMatmulOp m) {
        return llvm::any_of(m->getUsers(), [&](Operation *u) {
          return u->getBlock() == last->getBlock() && u->isBeforeInBlock(last);
        });
      };
      if (llvm::any_of(ArrayRef(products).drop_back(), usedEarly))
        continue;
      if (failed(checkTernaryShape(products[0])))
        return failure();
      int64_t K = products[0].getWeight().getType().getInFeatures();
      SmallVector<int64_t> sizes;
      SmallVector<Value> operands{input};
      SmallVector<Type> results;
      for (TernaryMatmulOp m : products) {
        sizes.push_back(m.getWeight().getType().getOutFeatures());
        operands.push_back(m.getWeight());
        results.push_back(m.getType());
      }
      OpBuilder b(last);
      DispatchOp d = dispatch(
          b, symbols,
          withTokens(
              ternaryMatmulKernel(sizes, K, tm, &getContext(), integerDot), tm),
          operands, results, tm);
      if (!d)
        return failure();
      for (auto [i, m] : llvm::enumerate(products)) {
        m->replaceAllUsesWith(ValueRange{d.getResult(i)});
        m->erase();
      }
    }
    return success();
  }

  static KernelSpec withTokens(KernelSpec k, int64_t tm) {
    k.name += "_t" + std::to_string(tm);
    return k;
  }

  /// A dispatch of `spec` (built on first use) on `operands`, the row-chunked
  /// ones replaced by views of their chunks; null after an error when a
  /// binding would exceed max-binding-bytes.
  DispatchOp dispatch(OpBuilder &b, SymbolTable &symbols,
                      const KernelSpec &spec, ValueRange operands,
                      TypeRange results, int64_t tm) {
    Location loc = b.getInsertionPoint()->getLoc();
    SmallVector<Value> buffers;
    for (auto [i, v] : llvm::enumerate(operands)) {
      const RowChunks *chunks = nullptr;
      for (auto &[operand, c] : spec.rowChunked)
        if (operand == i)
          chunks = &c;
      if (!chunks || chunks->count() == 1) {
        buffers.push_back(v);
        continue;
      }
      auto wt = cast<RankedTensorType>(v.getType());
      if (chunks->perChunk == 0) {
        emitError(loc) << "a row of " << wt << " is larger than one binding "
                       << "may be (" << (int64_t)maxBindingBytes << " bytes)";
        return nullptr;
      }
      for (int64_t c = 0; c < chunks->count(); ++c)
        buffers.push_back(WeightRowsOp::create(
            b, loc,
            RankedTensorType::get({chunks->rowsIn(c), chunks->cols},
                                  wt.getElementType()),
            v, chunks->first(c)));
    }
    if (maxBindingBytes > 0) {
      SmallVector<Type> types(ValueRange(buffers).getTypes());
      types.append(results.begin(), results.end());
      for (Type t : types) {
        int64_t bytes = mlir::tlora::bufferBytes(t, tm);
        if (auto kv = dyn_cast<KVCacheType>(t))
          bytes = 4 * kv.getMaxSeq() * kv.getKvHeads() * kv.getHeadDim();
        if (bytes > maxBindingBytes) {
          emitError(loc) << "kernel " << spec.name << " would bind " << bytes
                         << " bytes (" << t << "), over the target's "
                         << (int64_t)maxBindingBytes
                         << "-byte storage buffer range (only weights and the "
                            "training state are split into ranges"
                         << (isa<KVCacheType>(t)
                                 ? "; --max-seq-len makes the KV cache smaller)"
                                 : ")");
          return nullptr;
        }
      }
    }
    if (!symbols.lookup(spec.name))
      build(symbols, spec, loc);
    MLIRContext *ctx = b.getContext();
    return DispatchOp::create(
        b, loc, results,
        SymbolRefAttr::get(ctx, "kernels",
                           {FlatSymbolRefAttr::get(ctx, spec.name)}),
        buffers, spec.tokensFactor, spec.constant, ArrayAttr());
  }

  gpu::GPUModuleOp getOrCreateKernels(ModuleOp top) {
    for (auto m : top.getOps<gpu::GPUModuleOp>())
      if (m.getSymName() == "kernels")
        return m;
    top->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                 UnitAttr::get(&getContext()));
    OpBuilder b = OpBuilder::atBlockEnd(top.getBody());
    return gpu::GPUModuleOp::create(b, top.getLoc(), "kernels");
  }

  /// gpu.func @name(buffers..., T, pos, rows: i32) kernel, with
  /// known_block_size = [spec.workgroupSize, 1, 1].
  void build(SymbolTable &symbols, const KernelSpec &spec, Location loc) {
    MLIRContext *ctx = &getContext();
    SmallVector<Type> args(spec.buffers.begin(), spec.buffers.end());
    args.append(kKernelScalars, IntegerType::get(ctx, 32));
    OpBuilder b(ctx);
    auto fn = gpu::GPUFuncOp::create(b, loc, spec.name,
                                     FunctionType::get(ctx, args, {}));
    fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
    fn.setKnownBlockSizeAttr(
        DenseI32ArrayAttr::get(ctx, {(int32_t)spec.workgroupSize, 1, 1}));
    fn->setAttr(mlir::tlora::attr::kKernel, UnitAttr::get(ctx));
    symbols.insert(fn);
    Block &entry = fn.getBody().front();
    OpBuilder body = OpBuilder::atBlockBegin(&entry);
    auto toIndex = [&](Value v) -> Value {
      return arith::IndexCastOp::create(body, loc, body.getIndexType(), v);
    };
    auto inputs = entry.getArguments();
    auto scalars = inputs.take_back(kKernelScalars);
    KernelArgs a;
    a.buffers = inputs.drop_back(kKernelScalars);
    a.T = toIndex(scalars[0]);
    a.pos = toIndex(scalars[1]);
    a.rows = toIndex(scalars[2]);
    a.unit = gpu::BlockIdOp::create(body, loc, gpu::Dimension::x);
    a.lane = gpu::ThreadIdOp::create(body, loc, gpu::Dimension::x);
    spec.body(body, loc, a);
    gpu::ReturnOp::create(body, loc);
  }
};
} // namespace
