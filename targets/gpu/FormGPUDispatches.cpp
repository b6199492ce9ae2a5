// tlc-gpu-form-dispatches: tlora compute ops -> dispatches of per-shape
// gpu.func kernels, built with MLIR builders. One kernel formation for every
// GPU target: a backend converts the gpu.module (SPIR-V for Vulkan; NVVM and
// ROCDL next) and chooses nothing here but its weight encodings.
//
// A workgroup of kWorkgroupSize invocations handles one work unit (a token
// row for the kernels below); its invocations stride over the row.
#include "targets/gpu/Passes.h"

#include "dialects/tlora/Transforms/Passes.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <functional>

namespace tlc::gpu {
#define GEN_PASS_DEF_FORMGPUDISPATCHESPASS
#include "targets/gpu/Passes.h.inc"
} // namespace tlc::gpu

using namespace mlir;
using namespace mlir::tlora;
using namespace tlc::gpu;

namespace {
/// What a kernel body receives: its buffers (operands, then results), the
/// call's scalars as indices, its work unit (workgroup id x) and its lane
/// (invocation id x in the workgroup).
struct KernelArgs {
  ValueRange buffers;
  Value T, pos, rows, unit, lane;
};
using KernelBody =
    std::function<void(OpBuilder &, Location, const KernelArgs &)>;

/// A kernel to build once per shape and the workload of its dispatches
/// (workgroups = tokensFactor * T + constant).
struct KernelSpec {
  std::string name;
  SmallVector<Type> buffers;
  KernelBody body;
  int64_t tokensFactor = 1, constant = 0;
};

int64_t dim(Value v, unsigned i) {
  return cast<ShapedType>(v.getType()).getDimSize(i);
}

Value indexConst(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

Value f32Const(OpBuilder &b, Location loc, float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

/// `for i = lane; i < n; i += kWorkgroupSize`: a workgroup's invocations
/// sharing a row.
void forLanes(OpBuilder &b, Location loc, Value lane, int64_t n,
              function_ref<void(OpBuilder &, Value)> fn) {
  auto loop = scf::ForOp::create(b, loc, lane, indexConst(b, loc, n),
                                 indexConst(b, loc, kWorkgroupSize));
  OpBuilder inner = OpBuilder::atBlockTerminator(loop.getBody());
  fn(inner, loop.getInductionVar());
}

/// Memory shared by a workgroup (a memref.alloc in it: the form every GPU
/// lowering of MLIR turns into workgroup variables). Address space 3 is
/// workgroup memory in SPIR-V's Vulkan mapping, NVVM and ROCDL alike.
Value allocWorkgroup(OpBuilder &b, Location loc, int64_t n, Type element) {
  auto type = MemRefType::get(
      {n}, element, MemRefLayoutAttrInterface(),
      IntegerAttr::get(IntegerType::get(element.getContext(), 64), 3));
  return memref::AllocOp::create(b, loc, type);
}

MemRefType rowsOf(int64_t tm, int64_t d, Type element) {
  return MemRefType::get({tm, d}, element);
}

/// Float weights on the GPU: f32 as they are; bf16 as 32-bit words holding
/// two values each (no 16-bit storage needed: every Vulkan device reads it).
Type weightBuffer(ShapedType t) {
  if (t.getElementType().isBF16())
    return MemRefType::get({(t.getNumElements() + 1) / 2},
                           IntegerType::get(t.getContext(), 32));
  return MemRefType::get(t.getShape(), t.getElementType());
}

/// Element `flat` of a weight buffer of weightBuffer(t), as f32 (bf16: the
/// high half of an f32 word, exactly).
Value loadWeight(OpBuilder &b, Location loc, Value buffer, Type element,
                 ValueRange indices, Value flat) {
  if (!element.isBF16())
    return memref::LoadOp::create(b, loc, buffer, indices);
  Value word = memref::LoadOp::create(
      b, loc, buffer,
      ValueRange{arith::ShRUIOp::create(b, loc, flat, indexConst(b, loc, 1))});
  Value odd = arith::AndIOp::create(
      b, loc, arith::IndexCastOp::create(b, loc, b.getI32Type(), flat),
      arith::ConstantIntOp::create(b, loc, 1, 32));
  Value shift = arith::MulIOp::create(
      b, loc, odd, arith::ConstantIntOp::create(b, loc, 16, 32));
  Value half = arith::ShRUIOp::create(b, loc, word, shift);
  Value bits = arith::ShLIOp::create(
      b, loc, half, arith::ConstantIntOp::create(b, loc, 16, 32));
  return arith::BitcastOp::create(b, loc, b.getF32Type(), bits);
}

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

/// out[t, :] = table[ids[t], :] as f32; one token per workgroup.
KernelSpec embedKernel(EmbedOp e, int64_t tm) {
  auto table = cast<ShapedType>(e.getTable().getType());
  int64_t V = table.getDimSize(0), D = table.getDimSize(1);
  Type et = table.getElementType(), f32 = Float32Type::get(e.getContext());
  KernelSpec k;
  k.name = llvm::formatv("embed_v{0}_d{1}_{2}", V, D, et.isBF16() ? "bf16"
                                                                   : "f32");
  k.buffers = {weightBuffer(table),
               MemRefType::get({tm}, IntegerType::get(e.getContext(), 32)),
               rowsOf(tm, D, f32)};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value id = arith::IndexCastOp::create(
        b, loc, b.getIndexType(),
        memref::LoadOp::create(b, loc, a.buffers[1], a.unit));
    Value row = arith::MulIOp::create(b, loc, id, indexConst(b, loc, D));
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      Value v = loadWeight(b, loc, a.buffers[0], et, {id, d},
                           arith::AddIOp::create(b, loc, row, d));
      memref::StoreOp::create(b, loc, v, a.buffers[2], {a.unit, d});
    });
  };
  return k;
}

/// out[t, :] = w * x[t, :] / sqrt(mean(x[t, :]^2) + eps): each invocation
/// sums its strided squares, invocation 0 adds the kWorkgroupSize partial
/// sums in order (deterministic), then all scale their elements.
KernelSpec rmsNormKernel(RMSNormOp n, int64_t tm) {
  int64_t D = dim(n.getInput(), 1);
  auto wt = cast<ShapedType>(n.getWeight().getType());
  Type et = wt.getElementType();
  float eps = n.getEpsilon().convertToFloat();
  MLIRContext *ctx = n.getContext();
  Type f32 = Float32Type::get(ctx);
  KernelSpec k;
  k.name = llvm::formatv("rms_norm_d{0}_{1}_eps{2}", D,
                         et.isBF16() ? "bf16" : "f32",
                         llvm::utohexstr(llvm::bit_cast<uint32_t>(eps)));
  k.buffers = {rowsOf(tm, D, f32), weightBuffer(wt), rowsOf(tm, D, f32)};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value x = a.buffers[0], w = a.buffers[1], out = a.buffers[2];
    Value partial = allocWorkgroup(b, loc, kWorkgroupSize, b.getF32Type());
    Value zero = indexConst(b, loc, 0), one = indexConst(b, loc, 1);
    Value fzero = f32Const(b, loc, 0.0f);
    auto sum = scf::ForOp::create(
        b, loc, a.lane, indexConst(b, loc, D),
        indexConst(b, loc, kWorkgroupSize), ValueRange{fzero},
        [&](OpBuilder &b, Location loc, Value d, ValueRange acc) {
          Value v = memref::LoadOp::create(b, loc, x, {a.unit, d});
          Value s = arith::AddFOp::create(
              b, loc, acc[0], arith::MulFOp::create(b, loc, v, v));
          scf::YieldOp::create(b, loc, s);
        });
    memref::StoreOp::create(b, loc, sum.getResult(0), partial, a.lane);
    gpu::BarrierOp::create(b, loc);
    Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                        a.lane, zero);
    scf::IfOp::create(b, loc, first, [&](OpBuilder &b, Location loc) {
      auto total = scf::ForOp::create(
          b, loc, zero, indexConst(b, loc, kWorkgroupSize), one,
          ValueRange{fzero},
          [&](OpBuilder &b, Location loc, Value i, ValueRange acc) {
            Value p = memref::LoadOp::create(b, loc, partial, i);
            scf::YieldOp::create(b, loc,
                                 ValueRange{arith::AddFOp::create(
                                     b, loc, acc[0], p)});
          });
      Value mean = arith::DivFOp::create(b, loc, total.getResult(0),
                                         f32Const(b, loc, (float)D));
      Value r = arith::DivFOp::create(
          b, loc, f32Const(b, loc, 1.0f),
          math::SqrtOp::create(b, loc,
                               arith::AddFOp::create(b, loc, mean,
                                                     f32Const(b, loc, eps))));
      memref::StoreOp::create(b, loc, r, partial, zero);
      scf::YieldOp::create(b, loc);
    });
    gpu::BarrierOp::create(b, loc);
    Value r = memref::LoadOp::create(b, loc, partial, zero);
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      Value v = memref::LoadOp::create(b, loc, x, {a.unit, d});
      Value wf = loadWeight(b, loc, w, et, {d}, d);
      Value h = arith::MulFOp::create(b, loc, v, r);
      memref::StoreOp::create(b, loc, arith::MulFOp::create(b, loc, wf, h),
                              out, {a.unit, d});
    });
  };
  return k;
}

/// An elementwise kernel over [T x D] rows: out = fn(a, b).
KernelSpec elementwiseKernel(
    std::string name, int64_t D, int64_t tm, MLIRContext *ctx,
    std::function<Value(OpBuilder &, Location, Value, Value)> fn) {
  KernelSpec k;
  k.name = std::move(name);
  Type buf = rowsOf(tm, D, Float32Type::get(ctx));
  k.buffers = {buf, buf, buf};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      Value x = memref::LoadOp::create(b, loc, a.buffers[0], {a.unit, d});
      Value y = memref::LoadOp::create(b, loc, a.buffers[1], {a.unit, d});
      memref::StoreOp::create(b, loc, fn(b, loc, x, y), a.buffers[2],
                              {a.unit, d});
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
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value p = arith::AddIOp::create(b, loc, a.pos, a.unit);
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      Value v = memref::LoadOp::create(b, loc, a.buffers[1], {a.unit, d});
      memref::StoreOp::create(b, loc, v, a.buffers[0], {p, d});
    });
  };
  return k;
}

/// The kernel of an op for `tm` tokens at most, or an error naming the op.
FailureOr<KernelSpec> specFor(Operation *op, int64_t tm) {
  MLIRContext *ctx = op->getContext();
  KernelSpec k;
  if (auto e = dyn_cast<EmbedOp>(op)) {
    k = embedKernel(e, tm);
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
    k = elementwiseKernel(llvm::formatv("add_d{0}", D), D, tm, ctx,
                          [](OpBuilder &b, Location loc, Value x,
                             Value y) -> Value {
                            return arith::AddFOp::create(b, loc, x, y);
                          });
  } else if (auto a = dyn_cast<KVAppendOp>(op)) {
    auto c = a.getCache().getType();
    k = kvAppendKernel(c.getMaxSeq(), c.getKvHeads() * c.getHeadDim(), tm, ctx);
  } else {
    return op->emitOpError("has no GPU kernel yet (GPU targets build "
                           "embed, rms_norm, squared_relu_mul, kv_append "
                           "and add so far)");
  }
  k.name += "_t" + std::to_string(tm);
  return k;
}

struct FormGPUDispatchesPass
    : tlc::gpu::impl::FormGPUDispatchesPassBase<FormGPUDispatchesPass> {
  void runOnOperation() override {
    ModuleOp top = getOperation();
    MLIRContext *ctx = &getContext();
    gpu::GPUModuleOp kernels = getOrCreateKernels(top);
    SymbolTable symbols(kernels);
    for (auto func : top.getOps<func::FuncOp>()) {
      auto maxTokens =
          func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kMaxTokens);
      if (!maxTokens)
        continue;
      int64_t tm = maxTokens.getInt();
      for (Operation &op : llvm::make_early_inc_range(func.getBody().front())) {
        if (isa<WeightOp, TernaryWeightOp, KVCacheOp, func::ReturnOp,
                DispatchOp, TrainableOp, HyperOp, TrainStateOp, LossScaleOp,
                arith::ConstantOp>(op))
          continue;
        FailureOr<KernelSpec> spec = specFor(&op, tm);
        if (failed(spec))
          return signalPassFailure();
        if (!symbols.lookup(spec->name))
          build(symbols, *spec, op.getLoc());
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
  /// known_block_size = [kWorkgroupSize, 1, 1].
  void build(SymbolTable &symbols, const KernelSpec &spec, Location loc) {
    MLIRContext *ctx = &getContext();
    SmallVector<Type> args(spec.buffers.begin(), spec.buffers.end());
    args.append(kKernelScalars, IntegerType::get(ctx, 32));
    OpBuilder b(ctx);
    auto fn = gpu::GPUFuncOp::create(b, loc, spec.name,
                                     FunctionType::get(ctx, args, {}));
    fn->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
    fn.setKnownBlockSizeAttr(
        DenseI32ArrayAttr::get(ctx, {(int32_t)kWorkgroupSize, 1, 1}));
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
