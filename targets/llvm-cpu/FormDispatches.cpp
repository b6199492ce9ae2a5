// tlc-llvmcpu-form-dispatches: tlora compute ops -> dispatches of per-shape
// kernels instantiated from the MLIR templates of KernelTemplates.h.
#include "targets/llvm-cpu/KernelTemplates.h"
#include "targets/llvm-cpu/Passes.h"
#include "targets/llvm-cpu/kernels/ternary.h"

#include "dialects/tlora/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Parser/Parser.h"
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
using Vars = llvm::SmallVector<std::pair<std::string, std::string>>;

std::string fillTemplate(llvm::StringRef tmpl, const Vars &vars) {
  std::string out = tmpl.str();
  for (auto &[key, value] : vars) {
    std::string hole = "{{" + key + "}}";
    for (size_t at = out.find(hole); at != std::string::npos;
         at = out.find(hole, at + value.size()))
      out.replace(at, hole.size(), value);
  }
  return out;
}

std::string floatLiteral(double v) { return llvm::formatv("{0:e9}", v).str(); }

std::string elementName(Type t) {
  if (t.isBF16())
    return "bf16";
  if (t.isInteger(8))
    return "i8";
  if (t.isInteger(6))
    return "q6";
  return "f32";
}

/// A kernel to instantiate: its template, holes and workload.
/// The body of a kernel built with builders (typed lowering): it receives
/// the kernel's buffers and its scalars T, pos, rows, begin, end.
struct KernelArgs {
  ValueRange buffers;
  Value T, pos, rows, begin, end;
};
using KernelBody = std::function<void(OpBuilder &, Location, const KernelArgs &)>;

struct KernelSpec {
  const char *tmpl; // MLIR text with {{HOLES}}, or null when `body` is set
  std::string name;
  Vars vars;
  int64_t tokensFactor = 1, constant = 0;
  SmallVector<Type> buffers; // typed kernels: the buffer argument types
  KernelBody body;
};

/// `for i in [lo, hi)` with unit step, `fn(i)` in the loop body.
void forRange(OpBuilder &b, Location loc, Value lo, Value hi,
              function_ref<void(OpBuilder &, Value)> fn) {
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto loop = scf::ForOp::create(b, loc, lo, hi, one);
  OpBuilder inner = OpBuilder::atBlockTerminator(loop.getBody());
  fn(inner, loop.getInductionVar());
}

/// cache[pos + t] = x[t] for the call's rows t in [begin, end).
KernelSpec kvAppendKernel(int64_t D) {
  KernelSpec k;
  k.tmpl = nullptr;
  k.body = [D](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value width = arith::ConstantIndexOp::create(b, loc, D);
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
KernelSpec addKernel(int64_t D) {
  KernelSpec k;
  k.tmpl = nullptr;
  k.name = llvm::formatv("add_d{0}", D);
  k.body = [D](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value width = arith::ConstantIndexOp::create(b, loc, D);
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

int64_t dim(Value v, unsigned i) {
  return cast<ShapedType>(v.getType()).getDimSize(i);
}

FailureOr<KernelSpec> specFor(Operation *op, int64_t tm) {
  std::string TM = std::to_string(tm);
  auto s = [](int64_t v) { return std::to_string(v); };
  KernelSpec k;
  if (auto e = dyn_cast<EmbedOp>(op)) {
    auto w = elementName(e.getTable().getType().getElementType());
    k = {kEmbed,
         llvm::formatv("embed_v{0}_d{1}_{2}", dim(e.getTable(), 0),
                       dim(e.getTable(), 1), w),
         {{"V", s(dim(e.getTable(), 0))},
          {"D", s(dim(e.getTable(), 1))},
          {"W", w}}};
  } else if (auto n = dyn_cast<RMSNormOp>(op)) {
    auto w = elementName(n.getWeight().getType().getElementType());
    float eps = n.getEpsilon().convertToFloat();
    k = {
        kRMSNorm,
        llvm::formatv("rms_norm_d{0}_{1}_eps{2}", dim(n.getInput(), 1), w,
                      llvm::utohexstr(llvm::bit_cast<uint32_t>(eps))),
        {{"D", s(dim(n.getInput(), 1))}, {"W", w}, {"EPS", floatLiteral(eps)}}};
  } else if (auto q = dyn_cast<QuantizeOp>(op)) {
    int64_t K = q.getType().getFeatures();
    k = {kQuantize,
         llvm::formatv("quantize_k{0}", K),
         {{"K", s(K)},
          {"TMK", s(tm * K)},
          {"QB", s(bufferBytes(q.getType(), tm))}}};
  } else if (auto m = dyn_cast<TernaryMatmulOp>(op)) {
    auto w = m.getWeight().getType();
    int64_t N = w.getOutFeatures(), K = w.getInFeatures();
    if (K % TLC_TERNARY_BLOCK_K != 0)
      return op->emitOpError("the CPU ternary kernel needs in_features % ")
             << TLC_TERNARY_BLOCK_K << " == 0, got " << K;
    k = {kTernaryMatmul,
         llvm::formatv("ternary_matmul_n{0}_k{1}", N, K),
         {{"N", s(N)},
          {"K", s(K)},
          {"TMN", s(tm * N)},
          {"QB", s(bufferBytes(m.getInput().getType(), tm))},
          {"WB", s(tlc::llvmcpu::ternaryParamBytes(N, K))}},
         0,
         (N + 4 * TLC_TERNARY_TILE_N - 1) / (4 * TLC_TERNARY_TILE_N)};
  } else if (auto d = dyn_cast<DenseOp>(op)) {
    Type et = d.getWeight().getType().getElementType();
    auto w = elementName(et);
    int64_t N = dim(d.getWeight(), 0), K = dim(d.getWeight(), 1);
    if (w == "q6" && K % 64 != 0)
      return op->emitOpError("the 6-bit head needs in_features % 64 == 0, got ")
             << K;
    std::string wt;
    llvm::raw_string_ostream(wt) << et;
    k = {kDense,
         llvm::formatv("dense_n{0}_k{1}_{2}", N, K, w),
         {{"N", s(N)},
          {"K", s(K)},
          {"W", w},
          {"WT", wt},
          {"TMK", s(tm * K)},
          {"NK", s(N * K)},
          {"TMN", s(tm * N)}},
         0,
         (N + TLC_DENSE_TILE_N - 1) / TLC_DENSE_TILE_N};
  } else if (auto r = dyn_cast<RopeOp>(op)) {
    int64_t D = dim(r.getInput(), 1), hd = r.getHeadDim();
    double theta = r.getTheta().convertToDouble();
    // inv_freq exactly as transformers computes it, in float32.
    std::string inv;
    for (int64_t i = 0; i < hd / 2; ++i) {
      float e = (float)(2 * i) / (float)hd;
      float f = 1.0f / std::pow((float)theta, e);
      inv += (i ? ", " : "") + floatLiteral(f);
    }
    // Positions restart every `period` tokens (training batches); the
    // adjoint rotates backwards.
    int64_t period = r.getPeriod() ? (int64_t)*r.getPeriod() : (int64_t)1 << 40;
    k = {kRope,
         llvm::formatv("rope_d{0}_hd{1}_theta{2}{3}{4}", D, hd, (int64_t)theta,
                       r.getPeriod() ? "_p" + s(period) : "",
                       r.getInverse() ? "_inv" : ""),
         {{"D", s(D)},
          {"HD", s(hd)},
          {"HALF", s(hd / 2)},
          {"INV_FREQ", inv},
          {"PERIOD", s(period)},
          {"SIGN", r.getInverse() ? "-1.0" : "1.0"}}};
  } else if (auto a = dyn_cast<KVAppendOp>(op)) {
    auto c = a.getCache().getType();
    int64_t D = c.getKvHeads() * c.getHeadDim();
    k = kvAppendKernel(D);
    k.name = llvm::formatv("kv_append_s{0}_d{1}", c.getMaxSeq(), D);
    Type f32 = Float32Type::get(op->getContext());
    k.buffers = {MemRefType::get({c.getMaxSeq(), D}, f32),
                 MemRefType::get({tm, D}, f32)};
  } else if (auto a = dyn_cast<AttentionOp>(op)) {
    auto c = a.getKeys().getType();
    int64_t DQ = dim(a.getQuery(), 1), hd = c.getHeadDim(), H = DQ / hd;
    // One token (decode): one item per query head balances the threads;
    // several tokens: one per kv head shares key/value loads in the group.
    int64_t parts = tm == 1 ? H : c.getKvHeads();
    k = {kAttention,
         llvm::formatv("attention_s{0}_h{1}_kv{2}_hd{3}", c.getMaxSeq(), H,
                       c.getKvHeads(), hd),
         {{"S", s(c.getMaxSeq())},
          {"DQ", s(DQ)},
          {"DKV", s(c.getKvHeads() * hd)},
          {"H", s(H)},
          {"KVH", s(c.getKvHeads())},
          {"HD", s(hd)},
          {"PARTS", s(parts)},
          {"SCALE", floatLiteral(a.getScale().convertToFloat())}},
         parts,
         0};
  } else if (auto l = dyn_cast<LoraOp>(op)) {
    Type et = l.getLoraA().getType().getElementType();
    if (et != l.getLoraB().getType().getElementType())
      return op->emitOpError("lora_A and lora_B must have one element type");
    std::string wt;
    llvm::raw_string_ostream(wt) << et;
    int64_t R = dim(l.getLoraA(), 0), K = dim(l.getLoraA(), 1),
            N = dim(l.getLoraB(), 0);
    float scale = l.getScaling().convertToFloat();
    k = {kLora,
         llvm::formatv("lora_r{0}_k{1}_n{2}_{3}_s{4}", R, K, N, elementName(et),
                       llvm::utohexstr(llvm::bit_cast<uint32_t>(scale))),
         {{"R", s(R)},
          {"K", s(K)},
          {"N", s(N)},
          {"W", elementName(et)},
          {"WT", wt},
          {"SCALE", floatLiteral(scale)}}};
  } else if (auto m = dyn_cast<SquaredReluMulOp>(op)) {
    k = {kSquaredReluMul,
         llvm::formatv("squared_relu_mul_d{0}", dim(m.getResult(), 1)),
         {{"D", s(dim(m.getResult(), 1))}}};
  } else if (auto add = dyn_cast<arith::AddFOp>(op)) {
    if (!isa<RankedTensorType>(add.getType()))
      return op->emitOpError("only tensor additions are dispatched");
    int64_t D = dim(add.getResult(), 1);
    k = addKernel(D);
    Type buf = MemRefType::get({tm, D}, Float32Type::get(op->getContext()));
    k.buffers = {buf, buf, buf};
  } else {
    return op->emitOpError("has no llvm-cpu kernel");
  }
  k.name += "_t" + TM;
  k.vars.push_back({"NAME", k.name});
  k.vars.push_back({"TM", TM});
  return k;
}

//===----------------------------------------------------------------------===//
// Kernels that hand their buffers to one C microkernel (training ops)
//===----------------------------------------------------------------------===//

/// A scalar argument of a C microkernel: an MLIR constant, or "%T" (the
/// call's token count).
struct Scalar {
  const char *type; // "index" or "f32"
  std::string value;
};
Scalar idx(int64_t v) { return {"index", std::to_string(v)}; }
Scalar f32(float v) { return {"f32", floatLiteral(v)}; }
Scalar tokens() { return {"index", "%T"}; }

/// Bytes of a buffer holding `type` for `tm` tokens (>= 1).
int64_t bufferSize(Type type, int64_t tm) {
  if (auto t = dyn_cast<TernaryType>(type))
    return ternaryParamBytes(t.getOutFeatures(), t.getInFeatures());
  return std::max<int64_t>(1, bufferBytes(type, tm));
}

/// MLIR of `name`: buffers as byte memrefs, passed as pointers to `cfn`,
/// then the scalars, then the work range.
std::string cCallKernel(const std::string &name, const std::string &cfn,
                        ArrayRef<int64_t> bytes, ArrayRef<Scalar> scalars) {
  std::string body, args, call, types; // @cfn is declared by the prelude
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string m = llvm::formatv("memref<{0}xi8>", bytes[i]).str();
    args += llvm::formatv("%b{0}: {1}, ", i, m).str();
    body += llvm::formatv("  %b{0}i = memref.extract_aligned_pointer_as_index "
                          "%b{0} : {1} -> index\n  %b{0}p = func.call @ptr(%b{0}i)"
                          " : (index) -> !llvm.ptr\n",
                          i, m)
                .str();
    call += llvm::formatv("%b{0}p, ", i).str();
    types += "!llvm.ptr, ";
  }
  for (size_t i = 0; i < scalars.size(); ++i) {
    const Scalar &sc = scalars[i];
    if (sc.value == "%T") {
      call += "%T, ";
    } else {
      body += llvm::formatv("  %s{0} = arith.constant {1} : {2}\n", i,
                            sc.value, sc.type)
                  .str();
      call += llvm::formatv("%s{0}, ", i).str();
    }
    types += std::string(sc.type) + ", ";
  }
  types += "index, index";
  return "func.func @" + name + "(" + args + kKernelScalars +
         ") attributes {tlora.kernel} {\n" + body + "  func.call @" + cfn +
         "(" + call + "%begin, %end) : (" + types + ") -> ()\n  return\n}\n";
}

/// MLIR of a kernel running 2 or 3 ternary products of one quantized input
/// (tlc_k_ternary_matmul_group{2,3}).
std::string groupedTernaryKernel(const std::string &name, int64_t tm,
                                 int64_t qBytes, int64_t K,
                                 ArrayRef<int64_t> Ns) {
  std::string s, args, ptrs, call = "%qp", types = "!llvm.ptr";
  llvm::raw_string_ostream os(s);
  size_t G = Ns.size();
  for (size_t g = 0; g < G; ++g)
    args += llvm::formatv("%w{0}: memref<{1}xi8>, ", g,
                          ternaryParamBytes(Ns[g], K));
  for (size_t g = 0; g < G; ++g)
    args += llvm::formatv("%y{0}: memref<{1}x{2}xf32>, ", g, tm, Ns[g]);
  auto ptr = [&](const std::string &v, const std::string &type) {
    ptrs += llvm::formatv("  %{0}i = memref.extract_aligned_pointer_as_index "
                          "%{0} : {1} -> index\n  %{0}p = func.call @ptr(%{0}i)"
                          " : (index) -> !llvm.ptr\n",
                          v, type);
  };
  ptr("q", llvm::formatv("memref<{0}xi8>", qBytes).str());
  for (size_t g = 0; g < G; ++g) {
    ptr("w" + std::to_string(g),
        llvm::formatv("memref<{0}xi8>", ternaryParamBytes(Ns[g], K)).str());
    call += llvm::formatv(", %w{0}p", g);
    types += ", !llvm.ptr";
  }
  for (size_t g = 0; g < G; ++g) {
    ptr("y" + std::to_string(g),
        llvm::formatv("memref<{0}x{1}xf32>", tm, Ns[g]).str());
    call += llvm::formatv(", %y{0}p", g);
    types += ", !llvm.ptr";
  }
  std::string consts;
  for (size_t g = 0; g < G; ++g) {
    consts += llvm::formatv("  %n{0} = arith.constant {1} : index\n", g, Ns[g]);
    call += llvm::formatv(", %n{0}", g);
    types += ", index";
  }
  os << "func.func @" << name << "(%q: memref<" << qBytes << "xi8>, " << args
     << kKernelScalars << ") attributes {tlora.kernel} {\n"
     << consts << "  %tm = arith.constant " << tm
     << " : index\n  %k = arith.constant " << K << " : index\n"
     << ptrs << "  func.call @tlc_k_ternary_matmul_group" << G << "(" << call
     << ", %tm, %k, %T, %begin, %end) : (" << types
     << ", index, index, index, index, index) -> ()\n  return\n}\n";
  return s;
}

struct FormDispatchesPass
    : tlc::llvmcpu::impl::FormDispatchesPassBase<FormDispatchesPass> {
  /// Creates a dispatch of C microkernel `cfn` on `operands`, producing
  /// `results`; the kernel is named after `cfn` and a hash of its source.
  FailureOr<DispatchOp> cCall(OpBuilder &b, Location loc, ModuleOp kernels,
                              SymbolTable &symbols, int64_t tm,
                              const std::string &cfn, ValueRange operands,
                              TypeRange results, ArrayRef<Scalar> scalars,
                              int64_t tokensFactor, int64_t constant) {
    SmallVector<int64_t> bytes;
    for (Value v : operands)
      bytes.push_back(bufferSize(v.getType(), tm));
    for (Type t : results)
      bytes.push_back(bufferSize(t, tm));
    std::string source = cCallKernel("{{NAME}}", cfn, bytes, scalars);
    std::string name =
        llvm::formatv("{0}_{1}_t{2}", StringRef(cfn).drop_front(6),
                      llvm::utohexstr(llvm::xxh3_64bits(source)), tm)
            .str();
    if (!symbols.lookup(name) &&
        failed(parseInto(kernels, symbols,
                         kernelPrelude() +
                             fillTemplate(source, {{"NAME", name}}),
                         name, loc)))
      return failure();
    return DispatchOp::create(
        b, loc, results,
        SymbolRefAttr::get(&getContext(), "kernels",
                           {FlatSymbolRefAttr::get(&getContext(), name)}),
        operands, tokensFactor, constant, ArrayAttr());
  }

  /// Dispatches of the training ops; `handled` is false for other ops.
  LogicalResult lowerTrainingOp(Operation *op, ModuleOp kernels,
                                SymbolTable &symbols, int64_t tm,
                                int64_t seqLen, bool *handled) {
    *handled = true;
    OpBuilder b(op);
    Location loc = op->getLoc();
    auto units = [](int64_t n, int64_t per) { return (n + per - 1) / per; };
    auto call = [&](const std::string &cfn, ValueRange operands,
                    TypeRange results, ArrayRef<Scalar> scalars,
                    int64_t tokensFactor, int64_t constant) {
      return cCall(b, loc, kernels, symbols, tm, cfn, operands, results,
                   scalars, tokensFactor, constant);
    };
    auto replace = [&](FailureOr<DispatchOp> d) -> LogicalResult {
      if (failed(d))
        return failure();
      op->replaceAllUsesWith(d->getResults());
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
      if (failed(rows))
        return failure();
      auto weights = call(
          "tlc_k_lora_grad_weights",
          {l.getInput(), l.getResultGrad(), rows->getResult(0)},
          {l.getLoraAGrad().getType(), l.getLoraBGrad().getType()},
          {tokens(), idx(K), idx(N), idx(R), f32(scale)}, 0,
          units(K, 64) + units(N, 64));
      if (failed(weights))
        return failure();
      l.getInputGrad().replaceAllUsesWith(rows->getResult(1));
      l.getLoraAGrad().replaceAllUsesWith(weights->getResult(0));
      l.getLoraBGrad().replaceAllUsesWith(weights->getResult(1));
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
      if (failed(call("tlc_k_grad_norm", {state, o.getHyper()}, {},
                      {idx(total)}, 0, 1)))
        return failure();
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
  LogicalResult fuseLoraWithProducts(func::FuncOp func, ModuleOp kernels,
                                     SymbolTable &symbols, int64_t tm) {
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
      auto down = cCall(b, add.getLoc(), kernels, symbols, tm,
                        "tlc_k_lora_down", {l.getInput(), l.getLoraA()},
                        {uType}, {idx(K), idx(R)}, 1, 0);
      if (failed(down))
        return failure();
      auto fused = cCall(
          b, add.getLoc(), kernels, symbols, tm, "tlc_k_ternary_lora",
          {m.getInput(), m.getWeight(), down->getResult(0), l.getLoraB()},
          {add.getType()},
          {idx(tm), idx(K), idx(N), idx(R),
           f32(l.getScaling().convertToFloat()), tokens()},
          0, (N + 4 * TLC_TERNARY_TILE_N - 1) / (4 * TLC_TERNARY_TILE_N));
      if (failed(fused))
        return failure();
      add.getResult().replaceAllUsesWith(fused->getResult(0));
      add.erase();
      m.erase();
      l.erase();
    }
    return success();
  }

  /// Turns groups of 2 or 3 ternary products of one quantized input into
  /// one dispatch, placed at the last product (all weights dominate it)
  /// when no result is used before that point.
  LogicalResult groupTernaryProducts(func::FuncOp func, ModuleOp kernels,
                                     SymbolTable &symbols, int64_t tm) {
    MLIRContext *ctx = &getContext();
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
      SmallVector<int64_t> Ns;
      SmallVector<Value> operands{input};
      SmallVector<Type> results;
      std::string name = "ternary_matmul_n";
      int64_t units = 0;
      for (TernaryMatmulOp m : group) {
        int64_t N = m.getWeight().getType().getOutFeatures();
        name += (Ns.empty() ? "" : "x") + std::to_string(N);
        Ns.push_back(N);
        units += (N + 4 * TLC_TERNARY_TILE_N - 1) / (4 * TLC_TERNARY_TILE_N);
        operands.push_back(m.getWeight());
        results.push_back(m.getType());
      }
      name += "_k" + std::to_string(K) + "_t" + std::to_string(tm);
      if (!symbols.lookup(name)) {
        std::string source =
            kernelPrelude() +
            groupedTernaryKernel(name, tm, bufferBytes(input.getType(), tm), K,
                                 Ns);
        if (failed(parseInto(kernels, symbols, source, name, last->getLoc())))
          return failure();
      }
      OpBuilder b(last);
      auto dispatch = DispatchOp::create(
          b, last->getLoc(), results,
          SymbolRefAttr::get(ctx, "kernels",
                             {FlatSymbolRefAttr::get(ctx, name)}),
          operands, 0, units, ArrayAttr());
      for (auto [i, m] : llvm::enumerate(group)) {
        m.getResult().replaceAllUsesWith(dispatch.getResult(i));
        m->erase();
      }
    }
    return success();
  }

  void runOnOperation() override {
    ModuleOp top = getOperation();
    MLIRContext *ctx = &getContext();
    ModuleOp kernels = getOrCreateKernels(top);
    if (!kernels)
      return signalPassFailure();
    SymbolTable symbols(kernels);
    for (auto func : top.getOps<func::FuncOp>()) {
      auto maxTokens = func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kMaxTokens);
      if (!maxTokens)
        continue;
      if (failed(fuseLoraWithProducts(func, kernels, symbols,
                                      maxTokens.getInt())) ||
          failed(
              groupTernaryProducts(func, kernels, symbols, maxTokens.getInt())))
        return signalPassFailure();
      auto seqLen = func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kSeqLen);
      for (Operation &op : llvm::make_early_inc_range(func.getBody().front())) {
        if (isa<WeightOp, TernaryWeightOp, KVCacheOp, func::ReturnOp,
                DispatchOp, TrainableOp, HyperOp, TrainStateOp, LossScaleOp,
                arith::ConstantOp>(op))
          continue;
        bool handled;
        if (failed(lowerTrainingOp(&op, kernels, symbols, maxTokens.getInt(),
                                   seqLen ? seqLen.getInt() : 0, &handled)))
          return signalPassFailure();
        if (handled)
          continue;
        FailureOr<KernelSpec> spec = specFor(&op, maxTokens.getInt());
        if (failed(spec) ||
            failed(instantiate(kernels, symbols, *spec, op.getLoc())))
          return signalPassFailure();
        // Scalars (positions, row counts) reach kernels as runtime scalars.
        SmallVector<Value> buffers;
        for (Value v : op.getOperands())
          if (!isa<IndexType>(v.getType()))
            buffers.push_back(v);
        OpBuilder b(&op);
        auto dispatch = DispatchOp::create(
            b, op.getLoc(), op.getResultTypes(),
            SymbolRefAttr::get(ctx, "kernels",
                               {FlatSymbolRefAttr::get(ctx, spec->name)}),
            buffers, spec->tokensFactor, spec->constant, ArrayAttr());
        op.replaceAllUsesWith(dispatch.getResults());
        op.erase();
      }
    }
  }

  ModuleOp getOrCreateKernels(ModuleOp top) {
    for (auto m : top.getOps<ModuleOp>())
      if (m.getSymName() == "kernels")
        return m;
    OpBuilder b = OpBuilder::atBlockEnd(top.getBody());
    auto kernels = ModuleOp::create(b, top.getLoc(), StringRef("kernels"));
    OwningOpRef<ModuleOp> prelude =
        parseSourceString<ModuleOp>(kernelPrelude(), &getContext());
    if (!prelude)
      return nullptr;
    for (Operation &op : llvm::make_early_inc_range(*prelude->getBody()))
      op.moveBefore(kernels.getBody(), kernels.getBody()->end());
    return kernels;
  }

  LogicalResult instantiate(ModuleOp kernels, SymbolTable &symbols,
                            const KernelSpec &spec, Location loc) {
    if (symbols.lookup(spec.name))
      return success();
    if (spec.body)
      return build(kernels, symbols, spec, loc);
    return parseInto(kernels, symbols,
                     kernelPrelude() + fillTemplate(spec.tmpl, spec.vars),
                     spec.name, loc);
  }

  /// Builds a typed kernel: func @name(buffers..., T, pos, rows, begin,
  /// end) with the tlora.kernel marker, body from the spec.
  LogicalResult build(ModuleOp kernels, SymbolTable &symbols,
                      const KernelSpec &spec, Location loc) {
    MLIRContext *ctx = &getContext();
    SmallVector<Type> args(spec.buffers.begin(), spec.buffers.end());
    args.append(5, IndexType::get(ctx));
    OpBuilder b = OpBuilder::atBlockEnd(kernels.getBody());
    auto fn = func::FuncOp::create(b, loc, spec.name,
                                   FunctionType::get(ctx, args, {}));
    fn->setAttr(mlir::tlora::attr::kKernel, UnitAttr::get(ctx));
    Block *entry = fn.addEntryBlock();
    OpBuilder body = OpBuilder::atBlockEnd(entry);
    auto scalars = entry->getArguments().take_back(5);
    KernelArgs a{entry->getArguments().drop_back(5), scalars[0], scalars[1],
                 scalars[2], scalars[3], scalars[4]};
    spec.body(body, loc, a);
    func::ReturnOp::create(body, loc);
    symbols.insert(fn);
    return success();
  }

  /// Parses kernel source (with the prelude) and moves its new symbols into
  /// `kernels`.
  LogicalResult parseInto(ModuleOp kernels, SymbolTable &symbols,
                          const std::string &source, const std::string &name,
                          Location loc) {
    ParserConfig config(&getContext());
    OwningOpRef<ModuleOp> parsed = parseSourceString<ModuleOp>(source, config);
    if (!parsed)
      return emitError(loc) << "internal error: kernel template '" << name
                            << "' does not parse";
    for (Operation &op : llvm::make_early_inc_range(*parsed->getBody())) {
      auto sym = op.getAttrOfType<StringAttr>(SymbolTable::getSymbolAttrName());
      if (sym && symbols.lookup(sym))
        continue; // from the prelude
      op.remove();
      symbols.insert(&op);
    }
    return success();
  }
};
} // namespace
