// tlc-llvmcpu-form-dispatches: tlora compute ops -> dispatches of per-shape
// kernels built with MLIR builders: loops over memrefs (scf/arith/math), or
// one tlora.microkernel_call of a C microkernel (kernels/*.c).
#include "targets/llvm-cpu/Passes.h"
#include "targets/llvm-cpu/kernels/ternary.h"

#include "dialects/tlora/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/xxhash.h"

#include <cmath>
#include <functional>

namespace tlc::llvmcpu {
#define GEN_PASS_DEF_FORMDISPATCHESPASS
#include "targets/llvm-cpu/Passes.h.inc"
} // namespace tlc::llvmcpu

using namespace mlir;
using namespace mlir::tlora;
using namespace tlc::llvmcpu;

int64_t tlc::llvmcpu::ternaryParamBytes(int64_t outFeatures,
                                        int64_t inFeatures) {
  return 64 + (int64_t)tlc_ternary_packed_size(outFeatures, inFeatures);
}

namespace {
std::string elementName(Type t) {
  if (t.isBF16())
    return "bf16";
  if (t.isInteger(8))
    return "i8";
  if (t.isInteger(6))
    return "q6";
  return "f32";
}

int64_t dim(Value v, unsigned i) {
  return cast<ShapedType>(v.getType()).getDimSize(i);
}

/// Ceiling of n / per: the work units of n items, `per` to a unit.
int64_t units(int64_t n, int64_t per) { return (n + per - 1) / per; }

/// Work units of a ternary product: 4 tiles of columns each.
int64_t ternaryUnits(int64_t N) { return units(N, 4 * TLC_TERNARY_TILE_N); }

/// What a kernel body receives: its buffers (operands, then results) and
/// the runtime scalars T (tokens in this call), pos (position of the first
/// token), rows (logit rows wanted) and the [begin, end) range of the
/// workload this thread runs.
struct KernelArgs {
  ValueRange buffers;
  Value T, pos, rows, begin, end;
};
using KernelBody =
    std::function<void(OpBuilder &, Location, const KernelArgs &)>;

/// A kernel to build once per shape: `func @name(buffers..., T, pos, rows,
/// begin, end)`, and the workload of its dispatches.
struct KernelSpec {
  std::string name;
  SmallVector<Type> buffers;
  KernelBody body;
  int64_t tokensFactor = 1, constant = 0;
};

/// `for i in [lo, hi)` with unit step, `fn(i)` in the loop body.
void forRange(OpBuilder &b, Location loc, Value lo, Value hi,
              function_ref<void(OpBuilder &, Value)> fn) {
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto loop = scf::ForOp::create(b, loc, lo, hi, one);
  OpBuilder inner = OpBuilder::atBlockTerminator(loop.getBody());
  fn(inner, loop.getInductionVar());
}

Value indexConst(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

Value f32Const(OpBuilder &b, Location loc, float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

/// A loaded weight element as f32 (bf16 and f32 weights).
Value toF32(OpBuilder &b, Location loc, Value v) {
  if (v.getType().isF32())
    return v;
  return arith::ExtFOp::create(b, loc, b.getF32Type(), v);
}

MemRefType rowsOf(int64_t tm, int64_t d, Type element) {
  return MemRefType::get({tm, d}, element);
}

//===----------------------------------------------------------------------===//
// Kernels written as loops
//===----------------------------------------------------------------------===//

/// out[t, :] = f32(table[ids[t], :]).
KernelSpec embedKernel(Type table, int64_t tm) {
  auto t = cast<ShapedType>(table);
  int64_t V = t.getDimSize(0), D = t.getDimSize(1);
  Type f32 = Float32Type::get(table.getContext());
  KernelSpec k;
  k.name = llvm::formatv("embed_v{0}_d{1}_{2}", V, D,
                         elementName(t.getElementType()));
  k.buffers = {MemRefType::get({V, D}, t.getElementType()),
               MemRefType::get({tm}, IntegerType::get(table.getContext(), 32)),
               rowsOf(tm, D, f32)};
  k.body = [D](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value zero = indexConst(b, loc, 0), width = indexConst(b, loc, D);
    forRange(b, loc, a.begin, a.end, [&](OpBuilder &b, Value t) {
      Value id32 = memref::LoadOp::create(b, loc, a.buffers[1], t);
      Value id = arith::IndexCastOp::create(b, loc, b.getIndexType(), id32);
      forRange(b, loc, zero, width, [&](OpBuilder &b, Value d) {
        Value w = memref::LoadOp::create(b, loc, a.buffers[0], {id, d});
        memref::StoreOp::create(b, loc, toF32(b, loc, w), a.buffers[2],
                                {t, d});
      });
    });
  };
  return k;
}

/// out[t, :] = w * x[t, :] / sqrt(mean(x[t, :]^2) + eps).
KernelSpec rmsNormKernel(RMSNormOp n, int64_t tm) {
  int64_t D = dim(n.getInput(), 1);
  Type wt = n.getWeight().getType().getElementType();
  float eps = n.getEpsilon().convertToFloat();
  Type f32 = Float32Type::get(n.getContext());
  KernelSpec k;
  k.name = llvm::formatv("rms_norm_d{0}_{1}_eps{2}", D, elementName(wt),
                         llvm::utohexstr(llvm::bit_cast<uint32_t>(eps)));
  k.buffers = {rowsOf(tm, D, f32), MemRefType::get({D}, wt),
               rowsOf(tm, D, f32)};
  k.body = [D, eps](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value x = a.buffers[0], w = a.buffers[1], out = a.buffers[2];
    Value zero = indexConst(b, loc, 0), width = indexConst(b, loc, D),
          one = indexConst(b, loc, 1);
    Value fzero = f32Const(b, loc, 0.0f), n = f32Const(b, loc, (float)D),
          epsilon = f32Const(b, loc, eps);
    forRange(b, loc, a.begin, a.end, [&](OpBuilder &b, Value t) {
      auto sum = scf::ForOp::create(
          b, loc, zero, width, one, ValueRange{fzero},
          [&](OpBuilder &b, Location loc, Value d, ValueRange acc) {
            Value v = memref::LoadOp::create(b, loc, x, {t, d});
            Value sq = arith::MulFOp::create(b, loc, v, v);
            auto add = arith::AddFOp::create(b, loc, acc[0], sq);
            add.setFastmath(arith::FastMathFlags::reassoc);
            scf::YieldOp::create(b, loc, add.getResult());
          });
      Value mean = arith::DivFOp::create(b, loc, sum.getResult(0), n);
      Value r = math::RsqrtOp::create(
          b, loc, arith::AddFOp::create(b, loc, mean, epsilon));
      forRange(b, loc, zero, width, [&](OpBuilder &b, Value d) {
        Value v = memref::LoadOp::create(b, loc, x, {t, d});
        Value wf = toF32(b, loc, memref::LoadOp::create(b, loc, w, d));
        Value h = arith::MulFOp::create(b, loc, v, r);
        memref::StoreOp::create(b, loc, arith::MulFOp::create(b, loc, wf, h),
                                out, {t, d});
      });
    });
  };
  return k;
}

/// Rotary embedding of every head of x (rotate_half form), at positions
/// pos + (t mod period); the inverse rotates backwards (the adjoint).
KernelSpec ropeKernel(RopeOp r, int64_t tm) {
  int64_t D = dim(r.getInput(), 1), hd = r.getHeadDim(), half = hd / 2;
  double theta = r.getTheta().convertToDouble();
  // inv_freq exactly as transformers computes it, in float32.
  SmallVector<float> invFreq;
  for (int64_t i = 0; i < half; ++i)
    invFreq.push_back(
        1.0f / std::pow((float)theta, (float)(2 * i) / (float)hd));
  // Positions restart every `period` tokens (training batches).
  int64_t period = r.getPeriod() ? (int64_t)*r.getPeriod() : (int64_t)1 << 40;
  float sign = r.getInverse() ? -1.0f : 1.0f;
  Type f32 = Float32Type::get(r.getContext());
  KernelSpec k;
  k.name = llvm::formatv("rope_d{0}_hd{1}_theta{2}{3}{4}", D, hd,
                         (int64_t)theta,
                         r.getPeriod() ? "_p" + std::to_string(period) : "",
                         r.getInverse() ? "_inv" : "");
  k.buffers = {rowsOf(tm, D, f32), rowsOf(tm, D, f32)};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    // The table is a constant global beside the kernel.
    auto fn = b.getInsertionBlock()->getParentOp();
    auto tableType = MemRefType::get({half}, b.getF32Type());
    std::string tableName =
        (cast<func::FuncOp>(fn).getSymName() + "_inv_freq").str();
    {
      OpBuilder g(fn);
      memref::GlobalOp::create(
          g, loc, tableName, g.getStringAttr("private"), tableType,
          DenseElementsAttr::get(RankedTensorType::get({half}, g.getF32Type()),
                                 ArrayRef<float>(invFreq)),
          /*constant=*/true, IntegerAttr());
    }
    Value x = a.buffers[0], out = a.buffers[1];
    Value zero = indexConst(b, loc, 0), cHalf = indexConst(b, loc, half),
          cHd = indexConst(b, loc, hd), cD = indexConst(b, loc, D),
          cPeriod = indexConst(b, loc, period), cSign = f32Const(b, loc, sign);
    Value inv = memref::GetGlobalOp::create(b, loc, tableType, tableName);
    forRange(b, loc, a.begin, a.end, [&](OpBuilder &b, Value t) {
      Value p = arith::AddIOp::create(
          b, loc, a.pos, arith::RemUIOp::create(b, loc, t, cPeriod));
      Value pf = arith::SIToFPOp::create(
          b, loc, b.getF32Type(),
          arith::IndexCastOp::create(b, loc, b.getI64Type(), p));
      forRange(b, loc, zero, cHalf, [&](OpBuilder &b, Value i) {
        Value f = memref::LoadOp::create(b, loc, inv, i);
        Value angle = arith::MulFOp::create(b, loc, pf, f);
        Value cos = math::CosOp::create(b, loc, angle);
        Value sin = arith::MulFOp::create(
            b, loc, math::SinOp::create(b, loc, angle), cSign);
        auto loop = scf::ForOp::create(b, loc, zero, cD, cHd);
        OpBuilder h = OpBuilder::atBlockTerminator(loop.getBody());
        Value i1 = arith::AddIOp::create(h, loc, loop.getInductionVar(), i);
        Value i2 = arith::AddIOp::create(h, loc, i1, cHalf);
        Value x1 = memref::LoadOp::create(h, loc, x, {t, i1});
        Value x2 = memref::LoadOp::create(h, loc, x, {t, i2});
        Value o1 = arith::SubFOp::create(
            h, loc, arith::MulFOp::create(h, loc, x1, cos),
            arith::MulFOp::create(h, loc, x2, sin));
        Value o2 = arith::AddFOp::create(
            h, loc, arith::MulFOp::create(h, loc, x2, cos),
            arith::MulFOp::create(h, loc, x1, sin));
        memref::StoreOp::create(h, loc, o1, out, {t, i1});
        memref::StoreOp::create(h, loc, o2, out, {t, i2});
      });
    });
  };
  return k;
}

/// out = relu(g)^2 * u, elementwise.
KernelSpec squaredReluMulKernel(int64_t D, int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("squared_relu_mul_d{0}", D);
  Type buf = rowsOf(tm, D, Float32Type::get(ctx));
  k.buffers = {buf, buf, buf};
  k.body = [D](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value zero = indexConst(b, loc, 0), width = indexConst(b, loc, D),
          fzero = f32Const(b, loc, 0.0f);
    forRange(b, loc, a.begin, a.end, [&](OpBuilder &b, Value t) {
      forRange(b, loc, zero, width, [&](OpBuilder &b, Value d) {
        Value g = memref::LoadOp::create(b, loc, a.buffers[0], {t, d});
        Value u = memref::LoadOp::create(b, loc, a.buffers[1], {t, d});
        Value r = arith::MaximumFOp::create(b, loc, g, fzero);
        Value r2 = arith::MulFOp::create(b, loc, r, r);
        memref::StoreOp::create(b, loc, arith::MulFOp::create(b, loc, r2, u),
                                a.buffers[2], {t, d});
      });
    });
  };
  return k;
}

/// cache[pos + t] = x[t] for the call's rows t in [begin, end).
KernelSpec kvAppendKernel(int64_t S, int64_t D, int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("kv_append_s{0}_d{1}", S, D);
  Type f32 = Float32Type::get(ctx);
  k.buffers = {rowsOf(S, D, f32), rowsOf(tm, D, f32)};
  k.body = [D](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value zero = indexConst(b, loc, 0), width = indexConst(b, loc, D);
    forRange(b, loc, a.begin, a.end, [&](OpBuilder &b, Value t) {
      Value p = arith::AddIOp::create(b, loc, a.pos, t);
      forRange(b, loc, zero, width, [&](OpBuilder &b, Value d) {
        Value v = memref::LoadOp::create(b, loc, a.buffers[1], {t, d});
        memref::StoreOp::create(b, loc, v, a.buffers[0], {p, d});
      });
    });
  };
  return k;
}

/// Elementwise out = a + b over rows [begin, end) of [TM x D] buffers.
KernelSpec addKernel(int64_t D, int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("add_d{0}", D);
  Type buf = rowsOf(tm, D, Float32Type::get(ctx));
  k.buffers = {buf, buf, buf};
  k.body = [D](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value zero = indexConst(b, loc, 0), width = indexConst(b, loc, D);
    forRange(b, loc, a.begin, a.end, [&](OpBuilder &b, Value t) {
      forRange(b, loc, zero, width, [&](OpBuilder &b, Value d) {
        Value x = memref::LoadOp::create(b, loc, a.buffers[0], {t, d});
        Value y = memref::LoadOp::create(b, loc, a.buffers[1], {t, d});
        Value sum = arith::AddFOp::create(b, loc, x, y);
        memref::StoreOp::create(b, loc, sum, a.buffers[2], {t, d});
      });
    });
  };
  return k;
}

//===----------------------------------------------------------------------===//
// Kernels that call one C microkernel
//===----------------------------------------------------------------------===//

/// A scalar argument of a C microkernel: a constant, or one of the kernel's
/// runtime scalars.
struct Scalar {
  enum Kind { Index, F32, Tokens, Position, Rows } kind;
  int64_t i = 0;
  float f = 0;
};
Scalar idx(int64_t v) { return {Scalar::Index, v}; }
Scalar f32(float v) { return {Scalar::F32, 0, v}; }
Scalar tokens() { return {Scalar::Tokens}; }
Scalar position() { return {Scalar::Position}; }
Scalar rowsWanted() { return {Scalar::Rows}; }

Value materialize(OpBuilder &b, Location loc, const Scalar &s,
                  const KernelArgs &a) {
  switch (s.kind) {
  case Scalar::Index:
    return indexConst(b, loc, s.i);
  case Scalar::F32:
    return f32Const(b, loc, s.f);
  case Scalar::Tokens:
    return a.T;
  case Scalar::Position:
    return a.pos;
  case Scalar::Rows:
    return a.rows;
  }
  llvm_unreachable("scalar kind");
}

/// Bytes of a buffer holding `type` for `tm` tokens (>= 1).
int64_t bufferSize(Type type, int64_t tm) {
  if (auto t = dyn_cast<TernaryType>(type))
    return ternaryParamBytes(t.getOutFeatures(), t.getInFeatures());
  return std::max<int64_t>(1, bufferBytes(type, tm));
}

/// A kernel handing its buffers (byte memrefs sized for `tm` tokens) and
/// `scalars`, then begin and end, to C microkernel `cfn`. Without a `name`,
/// the kernel is named after `cfn` and a hash of its signature.
KernelSpec microkernelKernel(MLIRContext *ctx, std::string name,
                             StringRef cfn, ValueRange operands,
                             TypeRange results, ArrayRef<Scalar> scalars,
                             int64_t tm) {
  KernelSpec k;
  std::string key = cfn.str();
  auto addBuffer = [&](Type t) {
    int64_t bytes = bufferSize(t, tm);
    k.buffers.push_back(MemRefType::get({bytes}, IntegerType::get(ctx, 8)));
    key += " " + std::to_string(bytes);
  };
  for (Value v : operands)
    addBuffer(v.getType());
  for (Type t : results)
    addBuffer(t);
  for (const Scalar &s : scalars)
    key += llvm::formatv(" {0}:{1}:{2}", (int)s.kind, s.i,
                         llvm::bit_cast<uint32_t>(s.f));
  k.name = !name.empty() ? name
                         : llvm::formatv("{0}_{1}", cfn.drop_front(6),
                                         llvm::utohexstr(llvm::xxh3_64bits(key)))
                               .str();
  SmallVector<Scalar> args(scalars);
  k.body = [cfn = cfn.str(), args](OpBuilder &b, Location loc,
                                   const KernelArgs &a) {
    SmallVector<Value> operands(a.buffers);
    for (const Scalar &s : args)
      operands.push_back(materialize(b, loc, s, a));
    operands.append({a.begin, a.end});
    MicrokernelCallOp::create(b, loc, cfn, operands);
  };
  return k;
}

/// Buffer operands of a compute op: positions and row counts reach kernels
/// as runtime scalars.
SmallVector<Value> bufferOperands(Operation *op) {
  SmallVector<Value> buffers;
  for (Value v : op->getOperands())
    if (!isa<IndexType>(v.getType()))
      buffers.push_back(v);
  return buffers;
}

/// The kernel of an inference op, for `tm` tokens at most.
FailureOr<KernelSpec> specFor(Operation *op, int64_t tm) {
  MLIRContext *ctx = op->getContext();
  auto call = [&](std::string name, StringRef cfn, ArrayRef<Scalar> scalars,
                  int64_t tokensFactor, int64_t constant) {
    KernelSpec k = microkernelKernel(ctx, name, cfn, bufferOperands(op),
                                     op->getResultTypes(), scalars, tm);
    k.tokensFactor = tokensFactor;
    k.constant = constant;
    return k;
  };
  KernelSpec k;
  if (auto e = dyn_cast<EmbedOp>(op)) {
    k = embedKernel(e.getTable().getType(), tm);
  } else if (auto n = dyn_cast<RMSNormOp>(op)) {
    k = rmsNormKernel(n, tm);
  } else if (auto q = dyn_cast<QuantizeOp>(op)) {
    int64_t K = q.getType().getFeatures();
    k = call(llvm::formatv("quantize_k{0}", K), "tlc_k_quantize",
             {idx(tm), idx(K)}, 1, 0);
  } else if (auto m = dyn_cast<TernaryMatmulOp>(op)) {
    auto w = m.getWeight().getType();
    int64_t N = w.getOutFeatures(), K = w.getInFeatures();
    if (K % TLC_TERNARY_BLOCK_K != 0)
      return op->emitOpError("the CPU ternary kernel needs in_features % ")
             << TLC_TERNARY_BLOCK_K << " == 0, got " << K;
    k = call(llvm::formatv("ternary_matmul_n{0}_k{1}", N, K),
             "tlc_k_ternary_matmul", {idx(tm), idx(K), idx(N), tokens()}, 0,
             ternaryUnits(N));
  } else if (auto d = dyn_cast<DenseOp>(op)) {
    auto w = elementName(d.getWeight().getType().getElementType());
    int64_t N = dim(d.getWeight(), 0), K = dim(d.getWeight(), 1);
    if (w == "q6" && K % 64 != 0)
      return op->emitOpError("the 6-bit head needs in_features % 64 == 0, got ")
             << K;
    k = call(llvm::formatv("dense_n{0}_k{1}_{2}", N, K, w), "tlc_k_dense_" + w,
             {idx(tm), idx(K), idx(N), tokens(), rowsWanted()}, 0,
             units(N, TLC_DENSE_TILE_N));
  } else if (auto r = dyn_cast<RopeOp>(op)) {
    k = ropeKernel(r, tm);
  } else if (auto a = dyn_cast<KVAppendOp>(op)) {
    auto c = a.getCache().getType();
    k = kvAppendKernel(c.getMaxSeq(), c.getKvHeads() * c.getHeadDim(), tm, ctx);
  } else if (auto a = dyn_cast<AttentionOp>(op)) {
    auto c = a.getKeys().getType();
    int64_t DQ = dim(a.getQuery(), 1), hd = c.getHeadDim(), H = DQ / hd;
    // One token (decode): one item per query head balances the threads;
    // several tokens: one per kv head shares key/value loads in the group.
    int64_t parts = tm == 1 ? H : c.getKvHeads();
    k = call(llvm::formatv("attention_s{0}_h{1}_kv{2}_hd{3}", c.getMaxSeq(), H,
                           c.getKvHeads(), hd),
             "tlc_k_attention",
             {idx(H), idx(c.getKvHeads()), idx(parts), idx(hd),
              f32(a.getScale().convertToFloat()), position()},
             parts, 0);
  } else if (auto l = dyn_cast<LoraOp>(op)) {
    Type et = l.getLoraA().getType().getElementType();
    if (et != l.getLoraB().getType().getElementType())
      return op->emitOpError("lora_A and lora_B must have one element type");
    int64_t R = dim(l.getLoraA(), 0), K = dim(l.getLoraA(), 1),
            N = dim(l.getLoraB(), 0);
    float scale = l.getScaling().convertToFloat();
    k = call(llvm::formatv("lora_r{0}_k{1}_n{2}_{3}_s{4}", R, K, N,
                           elementName(et),
                           llvm::utohexstr(llvm::bit_cast<uint32_t>(scale))),
             "tlc_k_lora_" + elementName(et),
             {idx(K), idx(N), idx(R), idx(tm), f32(scale)}, 1, 0);
  } else if (auto m = dyn_cast<SquaredReluMulOp>(op)) {
    k = squaredReluMulKernel(dim(m.getResult(), 1), tm, ctx);
  } else if (auto add = dyn_cast<arith::AddFOp>(op)) {
    if (!isa<RankedTensorType>(add.getType()))
      return op->emitOpError("only tensor additions are dispatched");
    k = addKernel(dim(add.getResult(), 1), tm, ctx);
  } else {
    return op->emitOpError("has no llvm-cpu kernel");
  }
  k.name += "_t" + std::to_string(tm);
  return k;
}

struct FormDispatchesPass
    : tlc::llvmcpu::impl::FormDispatchesPassBase<FormDispatchesPass> {
  /// Creates a dispatch of C microkernel `cfn` on `operands`, producing
  /// `results`; the kernel is named after `cfn` and a hash of its signature.
  DispatchOp cCall(OpBuilder &b, Location loc, SymbolTable &symbols,
                   int64_t tm, StringRef cfn, ValueRange operands,
                   TypeRange results, ArrayRef<Scalar> scalars,
                   int64_t tokensFactor, int64_t constant) {
    KernelSpec k = microkernelKernel(&getContext(), "", cfn, operands,
                                     results, scalars, tm);
    k.name += "_t" + std::to_string(tm);
    k.tokensFactor = tokensFactor;
    k.constant = constant;
    return dispatch(b, loc, symbols, k, operands, results);
  }

  /// A dispatch of the kernel `spec` describes, built on first use.
  DispatchOp dispatch(OpBuilder &b, Location loc, SymbolTable &symbols,
                      const KernelSpec &spec, ValueRange operands,
                      TypeRange results) {
    if (!symbols.lookup(spec.name))
      build(symbols, spec, loc);
    MLIRContext *ctx = &getContext();
    return DispatchOp::create(
        b, loc, results,
        SymbolRefAttr::get(ctx, "kernels",
                           {FlatSymbolRefAttr::get(ctx, spec.name)}),
        operands, spec.tokensFactor, spec.constant, ArrayAttr());
  }

  /// Dispatches of the training ops; `handled` is false for other ops.
  LogicalResult lowerTrainingOp(Operation *op, SymbolTable &symbols, int64_t tm,
                                int64_t seqLen, bool *handled) {
    *handled = true;
    OpBuilder b(op);
    Location loc = op->getLoc();
    auto call = [&](const std::string &cfn, ValueRange operands,
                    TypeRange results, ArrayRef<Scalar> scalars,
                    int64_t tokensFactor, int64_t constant) {
      return cCall(b, loc, symbols, tm, cfn, operands, results,
                   scalars, tokensFactor, constant);
    };
    auto replace = [&](DispatchOp d) -> LogicalResult {
      op->replaceAllUsesWith(d.getResults());
      op->erase();
      return success();
    };
    auto weightSuffix = [](Value w) -> FailureOr<std::string> {
      Type et = cast<ShapedType>(w.getType()).getElementType();
      if (et.isBF16())
        return std::string("_bf16");
      if (et.isF32())
        return std::string("_f32");
      return failure();
    };
    if (auto g = dyn_cast<RMSNormGradOp>(op)) {
      auto w = weightSuffix(g.getWeight());
      if (failed(w))
        return op->emitOpError("needs a bf16 or f32 weight");
      return replace(call("tlc_k_rms_norm_grad" + *w, op->getOperands(),
                          op->getResultTypes(),
                          {idx(dim(g.getInput(), 1)),
                           f32(g.getEpsilon().convertToFloat())},
                          1, 0));
    }
    if (auto m = dyn_cast<TernaryMatmulTransposedOp>(op)) {
      auto w = m.getWeight().getType();
      int64_t N = w.getOutFeatures(), K = w.getInFeatures();
      if (K % TLC_TERNARY_BLOCK_K != 0)
        return op->emitOpError("the CPU ternary kernel needs in_features % ")
               << TLC_TERNARY_BLOCK_K << " == 0, got " << K;
      return replace(call("tlc_k_ternary_matmul_t", op->getOperands(),
                          op->getResultTypes(), {tokens(), idx(K), idx(N)}, 0,
                          units(K, 64)));
    }
    if (auto l = dyn_cast<LoraGradOp>(op)) {
      if (!l.getLoraA().getType().getElementType().isF32() ||
          !l.getLoraB().getType().getElementType().isF32())
        return op->emitOpError("trains float32 adapters only");
      int64_t R = dim(l.getLoraA(), 0), K = dim(l.getLoraA(), 1),
              N = dim(l.getLoraB(), 0);
      float scale = l.getScaling().convertToFloat();
      // Per token: u = x A^T and du = s dy B (kept), dx = du A; then the
      // weight gradients over all tokens, split over columns of A and rows
      // of B.
      auto ud = RankedTensorType::get({ShapedType::kDynamic, 2 * R},
                                      b.getF32Type());
      auto rows = call("tlc_k_lora_grad_rows",
                       {l.getInput(), l.getLoraA(), l.getLoraB(),
                        l.getResultGrad()},
                       {ud, l.getInputGrad().getType()},
                       {idx(K), idx(N), idx(R), f32(scale)}, 1, 0);
      auto weights = call(
          "tlc_k_lora_grad_weights",
          {l.getInput(), l.getResultGrad(), rows.getResult(0)},
          {l.getLoraAGrad().getType(), l.getLoraBGrad().getType()},
          {tokens(), idx(K), idx(N), idx(R), f32(scale)}, 0,
          units(K, 64) + units(N, 64));
      l.getInputGrad().replaceAllUsesWith(rows.getResult(1));
      l.getLoraAGrad().replaceAllUsesWith(weights.getResult(0));
      l.getLoraBGrad().replaceAllUsesWith(weights.getResult(1));
      op->erase();
      return success();
    }
    if (auto g = dyn_cast<SquaredReluMulGradOp>(op))
      return replace(call("tlc_k_squared_relu_mul_grad", op->getOperands(),
                          op->getResultTypes(), {idx(dim(g.getGate(), 1))}, 1,
                          0));
    if (auto a = dyn_cast<CausalAttentionOp>(op)) {
      int64_t hd = a.getHeadDim(), H = dim(a.getQuery(), 1) / hd,
              KVH = dim(a.getKey(), 1) / hd;
      return replace(call("tlc_k_causal_attention", op->getOperands(),
                          op->getResultTypes(),
                          {idx(H), idx(KVH), idx(hd), idx(a.getSeqLen()),
                           f32(a.getScale().convertToFloat())},
                          KVH, 0));
    }
    if (auto a = dyn_cast<CausalAttentionGradOp>(op)) {
      int64_t hd = a.getHeadDim(), H = dim(a.getQuery(), 1) / hd,
              KVH = dim(a.getKey(), 1) / hd, S = a.getSeqLen();
      if (tm % S != 0)
        return op->emitOpError("tokens per step (")
               << tm << ") must be a multiple of seq_len " << S;
      return replace(call("tlc_k_causal_attention_grad", op->getOperands(),
                          op->getResultTypes(),
                          {idx(H), idx(KVH), idx(hd), idx(S),
                           f32(a.getScale().convertToFloat())},
                          0, tm / S * KVH));
    }
    if (auto c = dyn_cast<CrossEntropyOp>(op)) {
      auto w = weightSuffix(c.getWeight());
      if (failed(w))
        return op->emitOpError("needs a bf16 or f32 LM head");
      return replace(call("tlc_k_cross_entropy" + *w, op->getOperands(),
                          op->getResultTypes(),
                          {tokens(), idx(dim(c.getInput(), 1)),
                           idx(dim(c.getWeight(), 0))},
                          0, units(tm, 16)));
    }
    if (auto c = dyn_cast<CrossEntropyGradOp>(op)) {
      auto w = weightSuffix(c.getWeight());
      if (failed(w))
        return op->emitOpError("needs a bf16 or f32 LM head");
      return replace(call("tlc_k_cross_entropy_grad" + *w, op->getOperands(),
                          op->getResultTypes(),
                          {tokens(), idx(dim(c.getInput(), 1)),
                           idx(dim(c.getWeight(), 0))},
                          0, units(tm, 16)));
    }
    if (isa<MeanLossOp>(op))
      return replace(call("tlc_k_loss_mean", op->getOperands(),
                          op->getResultTypes(), {tokens()}, 0, 1));
    if (isa<MeanLossGradOp>(op))
      return replace(call("tlc_k_mean_loss_grad", op->getOperands(),
                          op->getResultTypes(), {tokens()}, 0, 1));
    if (auto a = dyn_cast<AccumulateGradOp>(op)) {
      auto type = cast<RankedTensorType>(a.getGrad().getType());
      Value acc = TrainableOp::create(b, loc, type, a.getNameAttr(),
                                      b.getUnitAttr());
      int64_t n = type.getNumElements();
      return replace(call("tlc_k_accumulate", {a.getGrad(), acc}, {},
                          {idx(n)}, 0, units(n, 1024)));
    }
    if (auto o = dyn_cast<OptimizerStepOp>(op)) {
      auto func = op->getParentOfType<func::FuncOp>();
      int64_t total;
      trainStateLayout(func, &total);
      StringRef kind = stringifyOptimizer(o.getKind());
      int64_t n = trainStateElements(total, kind);
      Value state = TrainStateOp::create(
          b, loc, RankedTensorType::get({n}, b.getF32Type()));
      call("tlc_k_grad_norm", {state, o.getHyper()}, {}, {idx(total)}, 0, 1);
      return replace(call("tlc_k_" + kind.str(),
                          {state, o.getHyper()}, {}, {idx(total)}, 0,
                          units(total, 1024)));
    }
    *handled = false;
    return success();
  }

  /// Fuses `addf(ternary_matmul(q, W), lora(x, A, B))` (float32 A and B,
  /// each value used once) into a LoRA down-projection and one kernel that
  /// adds the up-projection to the product's tiles while they are in cache.
  void fuseLoraWithProducts(func::FuncOp func, SymbolTable &symbols,
                            int64_t tm) {
    SmallVector<arith::AddFOp> adds;
    func.walk([&](arith::AddFOp add) { adds.push_back(add); });
    for (arith::AddFOp add : adds) {
      TernaryMatmulOp m;
      LoraOp l;
      for (auto [a, b] : {std::pair{add.getLhs(), add.getRhs()},
                          std::pair{add.getRhs(), add.getLhs()}}) {
        if (!m && !l) {
          m = a.getDefiningOp<TernaryMatmulOp>();
          l = b.getDefiningOp<LoraOp>();
          if (!m || !l)
            m = nullptr, l = nullptr;
        }
      }
      if (!m || !l || !m->hasOneUse() || !l->hasOneUse() ||
          !l.getLoraA().getType().getElementType().isF32() ||
          !l.getLoraB().getType().getElementType().isF32())
        continue;
      int64_t K = m.getWeight().getType().getInFeatures(),
              N = m.getWeight().getType().getOutFeatures(),
              R = dim(l.getLoraA(), 0);
      if (K % TLC_TERNARY_BLOCK_K != 0)
        continue; // specFor reports it for the plain product
      OpBuilder b(add);
      auto uType = RankedTensorType::get({ShapedType::kDynamic, R},
                                         b.getF32Type());
      auto down = cCall(b, add.getLoc(), symbols, tm,
                        "tlc_k_lora_down", {l.getInput(), l.getLoraA()},
                        {uType}, {idx(K), idx(R)}, 1, 0);
      auto fused = cCall(
          b, add.getLoc(), symbols, tm, "tlc_k_ternary_lora",
          {m.getInput(), m.getWeight(), down.getResult(0), l.getLoraB()},
          {add.getType()},
          {idx(tm), idx(K), idx(N), idx(R),
           f32(l.getScaling().convertToFloat()), tokens()},
          0, ternaryUnits(N));
      add.getResult().replaceAllUsesWith(fused.getResult(0));
      add.erase();
      m.erase();
      l.erase();
    }
  }

  /// Turns groups of 2 or 3 ternary products of one quantized input into
  /// one dispatch of tlc_k_ternary_matmul_group{2,3}, placed at the last
  /// product (all weights dominate it) when no result is used before that
  /// point.
  void groupTernaryProducts(func::FuncOp func, SymbolTable &symbols,
                            int64_t tm) {
    llvm::MapVector<Value, SmallVector<TernaryMatmulOp>> byInput;
    func.walk(
        [&](TernaryMatmulOp op) { byInput[op.getInput()].push_back(op); });
    for (auto &[input, group] : byInput) {
      if (group.size() < 2 || group.size() > 3)
        continue;
      Operation *last = group.back();
      bool ok = true;
      for (TernaryMatmulOp m : group)
        for (Operation *user : m->getUsers())
          ok &= last->isBeforeInBlock(user);
      if (!ok)
        continue;
      int64_t K = group[0].getWeight().getType().getInFeatures();
      if (K % TLC_TERNARY_BLOCK_K != 0)
        continue; // specFor reports it for the single product
      SmallVector<Value> operands{input};
      SmallVector<Type> results;
      SmallVector<Scalar> scalars;
      std::string name = "ternary_matmul_n";
      int64_t workUnits = 0;
      for (TernaryMatmulOp m : group) {
        int64_t N = m.getWeight().getType().getOutFeatures();
        name += (scalars.empty() ? "" : "x") + std::to_string(N);
        scalars.push_back(idx(N));
        workUnits += ternaryUnits(N);
        operands.push_back(m.getWeight());
        results.push_back(m.getType());
      }
      scalars.append({idx(tm), idx(K), tokens()});
      KernelSpec k = microkernelKernel(
          &getContext(), name + "_k" + std::to_string(K),
          "tlc_k_ternary_matmul_group" + std::to_string(group.size()),
          operands, results, scalars, tm);
      k.name += "_t" + std::to_string(tm);
      k.tokensFactor = 0;
      k.constant = workUnits;
      OpBuilder b(last);
      auto d = dispatch(b, last->getLoc(), symbols, k, operands, results);
      for (auto [i, m] : llvm::enumerate(group)) {
        m.getResult().replaceAllUsesWith(d.getResult(i));
        m->erase();
      }
    }
  }

  void runOnOperation() override {
    ModuleOp top = getOperation();
    ModuleOp kernels = getOrCreateKernels(top);
    SymbolTable symbols(kernels);
    for (auto func : top.getOps<func::FuncOp>()) {
      auto maxTokens =
          func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kMaxTokens);
      if (!maxTokens)
        continue;
      int64_t tm = maxTokens.getInt();
      fuseLoraWithProducts(func, symbols, tm);
      groupTernaryProducts(func, symbols, tm);
      auto seqLen =
          func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kSeqLen);
      for (Operation &op : llvm::make_early_inc_range(func.getBody().front())) {
        if (isa<WeightOp, TernaryWeightOp, KVCacheOp, func::ReturnOp,
                DispatchOp, TrainableOp, HyperOp, TrainStateOp, LossScaleOp,
                arith::ConstantOp>(op))
          continue;
        bool handled;
        if (failed(lowerTrainingOp(&op, symbols, tm,
                                   seqLen ? seqLen.getInt() : 0, &handled)))
          return signalPassFailure();
        if (handled)
          continue;
        FailureOr<KernelSpec> spec = specFor(&op, tm);
        if (failed(spec))
          return signalPassFailure();
        OpBuilder b(&op);
        auto d = dispatch(b, op.getLoc(), symbols, *spec, bufferOperands(&op),
                          op.getResultTypes());
        op.replaceAllUsesWith(d.getResults());
        op.erase();
      }
    }
  }

  /// The nested module @kernels, created with the microkernel declarations.
  ModuleOp getOrCreateKernels(ModuleOp top) {
    for (auto m : top.getOps<ModuleOp>())
      if (m.getSymName() == "kernels")
        return m;
    OpBuilder b = OpBuilder::atBlockEnd(top.getBody());
    auto kernels = ModuleOp::create(b, top.getLoc(), StringRef("kernels"));
    declareMicrokernels(kernels);
    return kernels;
  }

  /// Builds a kernel: func @name(buffers..., T, pos, rows, begin, end) with
  /// the tlora.kernel marker, body from the spec.
  void build(SymbolTable &symbols, const KernelSpec &spec, Location loc) {
    MLIRContext *ctx = &getContext();
    SmallVector<Type> args(spec.buffers.begin(), spec.buffers.end());
    args.append(5, IndexType::get(ctx));
    OpBuilder b(ctx);
    auto fn = func::FuncOp::create(b, loc, spec.name,
                                   FunctionType::get(ctx, args, {}));
    fn->setAttr(mlir::tlora::attr::kKernel, UnitAttr::get(ctx));
    symbols.insert(fn);
    Block *entry = fn.addEntryBlock();
    OpBuilder body = OpBuilder::atBlockEnd(entry);
    auto scalars = entry->getArguments().take_back(5);
    KernelArgs a{entry->getArguments().drop_back(5), scalars[0], scalars[1],
                 scalars[2], scalars[3], scalars[4]};
    spec.body(body, loc, a);
    func::ReturnOp::create(body, loc);
  }
};
} // namespace
