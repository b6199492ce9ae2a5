// Building blocks of the GPU kernels (KernelBuilder.h).
#include "targets/gpu/KernelBuilder.h"

#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace tlc::gpu {

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
  forLanes(b, loc, lane, indexConst(b, loc, n), fn);
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

namespace {
/// Strided loops run kUnroll elements per iteration, then the rest one at
/// a time: the unrolled loads are independent, so a GPU issues them
/// together instead of waiting ~1 us for each (the order of the elements,
/// and so every fold's result, stays the same).
constexpr int64_t kUnroll = 4;

Value idx(OpBuilder &b, Location loc, int64_t v) {
  return indexConst(b, loc, v);
}

/// The bound below which i + (kUnroll - 1) * kWorkgroupSize < n.
Value unrolledBound(OpBuilder &b, Location loc, Value n) {
  if (std::optional<int64_t> c = getConstantIntValue(n))
    return idx(b, loc,
               std::max<int64_t>(*c - (kUnroll - 1) * kWorkgroupSize, 0));
  Value span = idx(b, loc, (kUnroll - 1) * kWorkgroupSize);
  Value fits =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, n, span);
  return arith::SelectOp::create(
      b, loc, fits, arith::SubIOp::create(b, loc, n, span), idx(b, loc, 0));
}

/// Where the one-at-a-time loop starts: the first lane + k * unrolled
/// step at or past `bound`.
Value remainderStart(OpBuilder &b, Location loc, Value lane, Value bound) {
  int64_t step = kUnroll * kWorkgroupSize;
  if (getConstantIntValue(bound) == 0)
    return lane;
  Value below =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, lane, bound);
  Value gap = arith::SubIOp::create(
      b, loc, arith::SelectOp::create(b, loc, below, bound, lane), lane);
  Value k = arith::DivUIOp::create(
      b, loc, arith::AddIOp::create(b, loc, gap, idx(b, loc, step - 1)),
      idx(b, loc, step));
  return arith::AddIOp::create(
      b, loc, lane, arith::MulIOp::create(b, loc, k, idx(b, loc, step)));
}

} // namespace

Value foldStep(OpBuilder &b, Location loc, Value lo, Value hi, int64_t step,
               Value init,
               function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  Value any = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, lo, hi);
  auto branch = scf::IfOp::create(
      b, loc, any,
      [&](OpBuilder &b, Location loc) {
        auto loop = scf::ForOp::create(
            b, loc, lo, hi, idx(b, loc, step), ValueRange{init},
            [&](OpBuilder &b, Location loc, Value i, ValueRange acc) {
              scf::YieldOp::create(b, loc, fn(b, loc, i, acc[0]));
            });
        scf::YieldOp::create(b, loc, loop.getResult(0));
      },
      [&](OpBuilder &b, Location loc) { scf::YieldOp::create(b, loc, init); });
  return branch.getResult(0);
}

void forLanes(OpBuilder &b, Location loc, Value lane, Value n,
              function_ref<void(OpBuilder &, Value)> fn) {
  Value bound = unrolledBound(b, loc, n);
  if (getConstantIntValue(bound) != 0) {
    auto main = scf::ForOp::create(b, loc, lane, bound,
                                   idx(b, loc, kUnroll * kWorkgroupSize));
    OpBuilder inner = OpBuilder::atBlockTerminator(main.getBody());
    Value i = main.getInductionVar();
    for (int64_t u = 0; u < kUnroll; ++u)
      fn(inner, u ? arith::AddIOp::create(inner, loc, i,
                                          idx(inner, loc, u * kWorkgroupSize))
                  : i);
  }
  auto rest = scf::ForOp::create(b, loc, remainderStart(b, loc, lane, bound), n,
                                 idx(b, loc, kWorkgroupSize));
  OpBuilder inner = OpBuilder::atBlockTerminator(rest.getBody());
  fn(inner, rest.getInductionVar());
}

void forGrid(OpBuilder &b, Location loc, const KernelArgs &a, int64_t groups,
             int64_t n, function_ref<void(OpBuilder &, Value)> fn) {
  Value first = arith::AddIOp::create(
      b, loc,
      arith::MulIOp::create(b, loc, a.unit, indexConst(b, loc, kWorkgroupSize)),
      a.lane);
  auto loop = scf::ForOp::create(b, loc, first, indexConst(b, loc, n),
                                 indexConst(b, loc, groups * kWorkgroupSize));
  OpBuilder inner = OpBuilder::atBlockTerminator(loop.getBody());
  fn(inner, loop.getInductionVar());
}

int64_t rowSliceGroups(int64_t d) {
  return (d + kWorkgroupSize - 1) / kWorkgroupSize;
}

Value rowToken(OpBuilder &b, Location loc, const KernelArgs &a, int64_t d,
               bool sliced) {
  return sliced ? arith::DivUIOp::create(b, loc, a.unit,
                                         indexConst(b, loc, rowSliceGroups(d)))
                      .getResult()
                : a.unit;
}

void forRowElements(OpBuilder &b, Location loc, const KernelArgs &a, int64_t d,
                    bool sliced,
                    function_ref<void(OpBuilder &, Value, Value)> fn) {
  if (!sliced) {
    forLanes(b, loc, a.lane, d,
             [&](OpBuilder &b, Value i) { fn(b, a.unit, i); });
    return;
  }
  Value groups = indexConst(b, loc, rowSliceGroups(d));
  Value t = rowToken(b, loc, a, d, sliced);
  Value i = arith::AddIOp::create(
      b, loc,
      arith::MulIOp::create(b, loc,
                            arith::RemUIOp::create(b, loc, a.unit, groups),
                            indexConst(b, loc, kWorkgroupSize)),
      a.lane);
  when(b, loc,
       arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i,
                             indexConst(b, loc, d)),
       [&](OpBuilder &b, Location) { fn(b, t, i); });
}

int64_t gridGroups(int64_t n) {
  return std::max<int64_t>(
      1, std::min<int64_t>((n + kWorkgroupSize - 1) / kWorkgroupSize, 4096));
}

Value foldRange(OpBuilder &b, Location loc, Value lo, Value hi, Value init,
                function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  auto body = [&](OpBuilder &b, Location loc) {
    auto loop = scf::ForOp::create(
        b, loc, lo, hi, indexConst(b, loc, 1), ValueRange{init},
        [&](OpBuilder &b, Location loc, Value i, ValueRange acc) {
          scf::YieldOp::create(b, loc, fn(b, loc, i, acc[0]));
        });
    return loop.getResult(0);
  };
  std::optional<int64_t> l = getConstantIntValue(lo),
                         h = getConstantIntValue(hi);
  if (l && h && *l < *h)
    return body(b, loc);
  Value any = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, lo, hi);
  auto branch = scf::IfOp::create(
      b, loc, any,
      [&](OpBuilder &b, Location loc) {
        scf::YieldOp::create(b, loc, body(b, loc));
      },
      [&](OpBuilder &b, Location loc) { scf::YieldOp::create(b, loc, init); });
  return branch.getResult(0);
}

MemRefType flatOf(int64_t n, Type element) {
  return MemRefType::get({n}, element);
}

/// Folds `fn` over i = lane, lane + kWorkgroupSize, ... < n from `init`.
/// An invocation with no element takes `init` from a branch: MLIR's SPIR-V
/// conversion reads an scf.for's result from a variable only its body
/// stores, so a loop that runs zero times would give an undefined value
/// (lavapipe happens to read 0, NVIDIA reads garbage).
Value stridedFold(OpBuilder &b, Location loc, Value lane, Value n, Value init,
                  function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  Value bound = unrolledBound(b, loc, n);
  Value acc =
      getConstantIntValue(bound) == 0
          ? init
          : foldStep(b, loc, lane, bound, kUnroll * kWorkgroupSize, init,
                     [&](OpBuilder &b, Location loc, Value i, Value acc) {
                       for (int64_t u = 0; u < kUnroll; ++u)
                         acc = fn(
                             b, loc,
                             u ? arith::AddIOp::create(
                                     b, loc, i, idx(b, loc, u * kWorkgroupSize))
                               : i,
                             acc);
                       return acc;
                     });
  return foldStep(b, loc, remainderStart(b, loc, lane, bound), n,
                  kWorkgroupSize, acc, fn);
}

Value stridedFoldFlat(
    OpBuilder &b, Location loc, Value lane, int64_t n, Value init,
    function_ref<Value(OpBuilder &, Location, Value, Value)> fn,
    int64_t stride) {
  assert(n <= kFlatFoldMax / kWorkgroupSize * stride &&
         "row too long to unroll");
  Value acc = init;
  for (int64_t e = 0; e * stride < n; ++e) {
    Value i = arith::AddIOp::create(b, loc, lane, idx(b, loc, e * stride));
    if ((e + 1) * stride <= n) {
      acc = fn(b, loc, i, acc);
      continue;
    }
    // The last, partial stride: only invocations below n have an element.
    Value in = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, i,
                                     idx(b, loc, n));
    Value prev = acc;
    auto branch = scf::IfOp::create(
        b, loc, in,
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, fn(b, loc, i, prev));
        },
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, prev);
        });
    acc = branch.getResult(0);
  }
  return acc;
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

RowChunks rowChunks(ShapedType weight, int64_t maxBindingBytes) {
  RowChunks c;
  c.rows = weight.getDimSize(0);
  c.cols = weight.getDimSize(1);
  int64_t rowBytes = c.cols * (weight.getElementType().isBF16() ? 2 : 4);
  if (maxBindingBytes <= 0 || c.rows * rowBytes <= maxBindingBytes) {
    c.perChunk = c.rows;
    return c;
  }
  // Rows per chunk: a multiple of `step` so every chunk starts 256-aligned.
  int64_t step = 256 / std::gcd(rowBytes, (int64_t)256);
  c.perChunk = maxBindingBytes / rowBytes / step * step;
  return c;
}

/// The 16-byte vector type of wide weight chunks of element type `element`.
static VectorType wideWeightVector(Type element) {
  return VectorType::get({4}, element.isBF16()
                                  ? IntegerType::get(element.getContext(), 32)
                                  : element);
}

void addWeightChunks(KernelSpec &k, unsigned operand, ShapedType weight,
                     const RowChunks &chunks, bool wide) {
  Type et = weight.getElementType();
  int64_t bytes = et.isBF16() ? 2 : 4;
  assert((!wide || chunks.cols * bytes % 16 == 0) && "rows of 16-byte vectors");
  for (int64_t i = 0; i < chunks.count(); ++i)
    k.buffers.push_back(wide ? Type(MemRefType::get({chunks.rowsIn(i) *
                                                     chunks.cols * bytes / 16},
                                                    wideWeightVector(et)))
                             : weightBuffer(RankedTensorType::get(
                                   {chunks.rowsIn(i), chunks.cols}, et)));
  k.rowChunked.push_back({operand, chunks});
  if (chunks.count() > 1)
    k.name += "_rows" + std::to_string(chunks.perChunk);
}

Value loadWeightAt(OpBuilder &b, Location loc, ValueRange chunks,
                   const RowChunks &c, Type element, Value row, Value col) {
  return withRowChunk(
      b, loc, chunks, c, row,
      [&](OpBuilder &b, Location loc, Value buffer, Value local) -> Value {
        Value flat = arith::AddIOp::create(
            b, loc,
            arith::MulIOp::create(b, loc, local, indexConst(b, loc, c.cols)),
            col);
        return loadWeight(b, loc, buffer, element, {local, col}, flat);
      });
}

Value withRowChunk(
    OpBuilder &b, Location loc, ValueRange chunks, const RowChunks &c,
    Value row, function_ref<Value(OpBuilder &, Location, Value, Value)> fn) {
  auto in = [&](OpBuilder &b, Location loc, int64_t i) {
    return fn(
        b, loc, chunks[i],
        arith::SubIOp::create(b, loc, row, indexConst(b, loc, c.first(i))));
  };
  std::function<Value(OpBuilder &, Location, int64_t)> from =
      [&](OpBuilder &b, Location loc, int64_t i) -> Value {
    if (i + 1 == (int64_t)chunks.size())
      return in(b, loc, i);
    Value inside =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row,
                              indexConst(b, loc, c.first(i) + c.rowsIn(i)));
    auto branch = scf::IfOp::create(
        b, loc, inside,
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, in(b, loc, i));
        },
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, from(b, loc, i + 1));
        });
    return branch.getResult(0);
  };
  return from(b, loc, 0);
}

void forRowChunk(OpBuilder &b, Location loc, ValueRange chunks,
                 const RowChunks &c, Value row,
                 function_ref<void(OpBuilder &, Location, Value, Value)> fn) {
  std::function<void(OpBuilder &, Location, int64_t)> from =
      [&](OpBuilder &b, Location loc, int64_t i) {
        Value local =
            arith::SubIOp::create(b, loc, row, indexConst(b, loc, c.first(i)));
        if (i + 1 == (int64_t)chunks.size())
          return fn(b, loc, chunks[i], local);
        Value inside =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row,
                                  indexConst(b, loc, c.first(i) + c.rowsIn(i)));
        scf::IfOp::create(
            b, loc, inside,
            [&](OpBuilder &b, Location loc) {
              fn(b, loc, chunks[i], local);
              scf::YieldOp::create(b, loc);
            },
            [&](OpBuilder &b, Location loc) {
              from(b, loc, i + 1);
              scf::YieldOp::create(b, loc);
            });
      };
  from(b, loc, 0);
}

Value i32Const(OpBuilder &b, Location loc, int32_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32);
}

Value toIndex(OpBuilder &b, Location loc, Value v) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
}

/// Scratch for workgroupReduce: one slot per invocation and the result.
Value reduceScratch(OpBuilder &b, Location loc) {
  return allocWorkgroup(b, loc, kWorkgroupSize + 1, b.getF32Type());
}

/// Combines one value per invocation over the workgroup in a fixed order
/// (invocation 0 folds the kWorkgroupSize values in lane order, so results
/// do not depend on scheduling); every invocation gets the result. A lane-
/// order sum matches the CPU kernels' sums better than a tree does (int8
/// quantization downstream flips on an ulp near a rounding tie).
Value workgroupReduce(
    OpBuilder &b, Location loc, Value scratch, Value lane, Value v,
    function_ref<Value(OpBuilder &, Location, Value, Value)> combine) {
  memref::StoreOp::create(b, loc, v, scratch, lane);
  mlir::gpu::BarrierOp::create(b, loc);
  Value zero = indexConst(b, loc, 0),
        result = indexConst(b, loc, kWorkgroupSize);
  Value first =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, lane, zero);
  scf::IfOp::create(b, loc, first, [&](OpBuilder &b, Location loc) {
    // Slots 0-7, then 8 at a time: each group's loads are independent of
    // the running value (issued together), and the code stays small for
    // kernels that reduce many times.
    constexpr int64_t group = 8;
    Value acc = memref::LoadOp::create(b, loc, scratch, zero);
    for (int64_t i = 1; i < group; ++i)
      acc = combine(
          b, loc, acc,
          memref::LoadOp::create(b, loc, scratch, indexConst(b, loc, i)));
    auto rest = scf::ForOp::create(
        b, loc, indexConst(b, loc, group), result, indexConst(b, loc, group),
        ValueRange{acc},
        [&](OpBuilder &b, Location loc, Value i, ValueRange a) {
          Value v = a[0];
          for (int64_t j = 0; j < group; ++j)
            v = combine(
                b, loc, v,
                memref::LoadOp::create(b, loc, scratch,
                                       ValueRange{arith::AddIOp::create(
                                           b, loc, i, indexConst(b, loc, j))}));
          scf::YieldOp::create(b, loc, v);
        });
    acc = rest.getResult(0);
    memref::StoreOp::create(b, loc, acc, scratch, result);
    scf::YieldOp::create(b, loc);
  });
  mlir::gpu::BarrierOp::create(b, loc);
  return memref::LoadOp::create(b, loc, scratch, result);
}

Value wideReduceScratch(OpBuilder &b, Location loc, int64_t lanes) {
  return allocWorkgroup(b, loc, lanes + 16, b.getF32Type());
}

Value wideReduce(
    OpBuilder &b, Location loc, Value scratch, Value lane, int64_t lanes,
    Value v, function_ref<Value(OpBuilder &, Location, Value, Value)> combine) {
  assert(lanes % 16 == 0 && "16 groups of lanes");
  TLC_E(b, loc);
  int64_t per = lanes / 16;
  e.st(v, scratch, lane);
  mlir::gpu::BarrierOp::create(b, loc);
  when(b, loc, e.ult(lane, e.c(16)), [&](OpBuilder &b, Location loc) {
    TLC_E(b, loc);
    Value first = e.imul(lane, e.c(per));
    Value acc = e.ld(scratch, first);
    for (int64_t i = 1; i < per; ++i)
      acc = combine(b, loc, acc, e.ld(scratch, e.iadd(first, e.c(i))));
    e.st(acc, scratch, e.iadd(lane, e.c(lanes)));
  });
  mlir::gpu::BarrierOp::create(b, loc);
  Value acc = e.ld(scratch, e.c(lanes));
  for (int64_t i = 1; i < 16; ++i)
    acc = combine(b, loc, acc, e.ld(scratch, e.c(lanes + i)));
  return acc;
}

SmallVector<Value> weightElements(OpBuilder &b, Location loc, Value vector) {
  auto type = cast<VectorType>(vector.getType());
  SmallVector<Value> out;
  for (int64_t i = 0; i < type.getNumElements(); ++i) {
    Value word = vector::ExtractOp::create(b, loc, vector, i);
    if (type.getElementType().isF32()) {
      out.push_back(word);
      continue;
    }
    Value low = arith::ShLIOp::create(b, loc, word, i32Const(b, loc, 16));
    Value high = arith::AndIOp::create(b, loc, word,
                                       i32Const(b, loc, (int32_t)0xFFFF0000u));
    for (Value bits : {low, high})
      out.push_back(arith::BitcastOp::create(b, loc, b.getF32Type(), bits));
  }
  return out;
}

Value quantizeWord(OpBuilder &b, Location loc, ArrayRef<Value> four,
                   Value scale) {
  TLC_E(b, loc);
  Value word = i32Const(b, loc, 0);
  for (auto [i, v] : llvm::enumerate(four)) {
    Value r = e.max(
        e.min(math::RoundEvenOp::create(b, loc, e.mul(v, scale)), e.f(127.0f)),
        e.f(-128.0f));
    Value byte = arith::AndIOp::create(
        b, loc, arith::FPToSIOp::create(b, loc, b.getI32Type(), r),
        i32Const(b, loc, 255));
    word = arith::OrIOp::create(
        b, loc, word,
        arith::ShLIOp::create(b, loc, byte, i32Const(b, loc, 8 * (int)i)));
  }
  return word;
}

namespace {
/// The loop of tiledProduct and tiledDotProduct: per k-block, fill the two
/// [depth x stride] tiles between barriers, then per depth step load
/// `micro` values of each (rows ty + 8 i, columns tx + 8 j) and combine
/// them into the micro x micro accumulators with madd(a, b, acc).
TileResult tileLoop(
    OpBuilder &b, Location loc, Value lane, int64_t kBlocks, int64_t depth,
    int64_t stride, int64_t micro, Value zero,
    function_ref<void(OpBuilder &, Location, Value, Value, Value)> fill,
    function_ref<Value(OpBuilder &, Location, Value, Value, Value)> madd) {
  static_assert(kMicro * kMicro == kWorkgroupSize);
  assert(micro <= kMicro && "at most 8 x 8 per invocation");
  TLC_E(b, loc);
  Value aTile = allocWorkgroup(b, loc, depth * stride, zero.getType());
  Value bTile = allocWorkgroup(b, loc, depth * stride, zero.getType());
  TileResult r;
  r.ty = e.idiv(lane, e.c(kMicro));
  r.tx = e.irem(lane, e.c(kMicro));
  SmallVector<Value> init(micro * micro, zero);
  auto loop = scf::ForOp::create(
      b, loc, e.c(0), e.c(kBlocks), e.c(1), init,
      [&](OpBuilder &b, Location loc, Value kb, ValueRange acc) {
        TLC_E(b, loc);
        mlir::gpu::BarrierOp::create(b, loc);
        fill(b, loc, kb, aTile, bTile);
        mlir::gpu::BarrierOp::create(b, loc);
        SmallVector<Value> sum(acc.begin(), acc.end());
        for (int64_t k = 0; k < depth; ++k) {
          SmallVector<Value> as, bs;
          for (int64_t i = 0; i < micro; ++i) {
            Value off = e.c(k * stride + i * kMicro);
            as.push_back(e.ld(aTile, e.iadd(r.ty, off)));
            bs.push_back(e.ld(bTile, e.iadd(r.tx, off)));
          }
          for (int64_t i = 0; i < micro; ++i)
            for (int64_t j = 0; j < micro; ++j) {
              Value &c = sum[i * micro + j];
              c = madd(b, loc, as[i], bs[j], c);
            }
        }
        scf::YieldOp::create(b, loc, sum);
      });
  r.acc.assign(loop.getResults().begin(), loop.getResults().end());
  return r;
}
} // namespace

TileResult tiledProduct(OpBuilder &b, Location loc, Value lane, int64_t kBlocks,
                        const TileFill &fill) {
  static_assert(kTile == kMicro * kMicro);
  return tileLoop(b, loc, lane, kBlocks, kTileK, kTile, kMicro,
                  f32Const(b, loc, 0.0f), fill,
                  [](OpBuilder &b, Location loc, Value x, Value y, Value acc) {
                    return math::FmaOp::create(b, loc, x, y, acc).getResult();
                  });
}

TileResult tiledDotProduct(OpBuilder &b, Location loc, Value lane,
                           int64_t kBlocks, int64_t words, int64_t micro,
                           const DotTileFill &fill) {
  return tileLoop(b, loc, lane, kBlocks, words, kMicro * micro + 1, micro,
                  i32Const(b, loc, 0), fill,
                  [](OpBuilder &b, Location loc, Value x, Value y, Value acc) {
                    return arith::AddIOp::create(b, loc, acc,
                                                 dot4(b, loc, x, y))
                        .getResult();
                  });
}

void tileWorkload(KernelSpec &k, int64_t tm, int64_t cols, int64_t tile) {
  k.tokensFactor = 0;
  k.constant = (tm + tile - 1) / tile * ((cols + tile - 1) / tile);
}

void forOutputTile(
    OpBuilder &b, Location loc, const KernelArgs &a, int64_t cols,
    function_ref<void(OpBuilder &, Location, Value row0, Value col0)> fn,
    int64_t tileSize) {
  Value colTiles = indexConst(b, loc, (cols + tileSize - 1) / tileSize);
  Value tile = indexConst(b, loc, tileSize);
  Value row0 = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, a.unit, colTiles), tile);
  Value col0 = arith::MulIOp::create(
      b, loc, arith::RemUIOp::create(b, loc, a.unit, colTiles), tile);
  Value inside =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row0, a.T);
  when(b, loc, inside,
       [&](OpBuilder &b, Location loc) { fn(b, loc, row0, col0); });
}

Value ternaryAt(OpBuilder &b, Location loc, Value word, int64_t i) {
  int64_t shift = 8 * (i % 4) + 2 * (i / 4);
  Value code = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, word, i32Const(b, loc, shift)),
      i32Const(b, loc, 3));
  return arith::SubIOp::create(b, loc, code, i32Const(b, loc, 1));
}

Value TileResult::row(OpBuilder &b, Location loc, int64_t i) const {
  return arith::AddIOp::create(b, loc, ty, indexConst(b, loc, i * kMicro));
}
Value TileResult::col(OpBuilder &b, Location loc, int64_t j) const {
  return arith::AddIOp::create(b, loc, tx, indexConst(b, loc, j * kMicro));
}

Value addF(OpBuilder &b, Location loc, Value x, Value y) {
  return arith::AddFOp::create(b, loc, x, y);
}
Value maxF(OpBuilder &b, Location loc, Value x, Value y) {
  return arith::MaximumFOp::create(b, loc, x, y);
}

/// `fn(b)` only in invocations where `cond` holds.
void when(OpBuilder &b, Location loc, Value cond,
          function_ref<void(OpBuilder &, Location)> fn) {
  scf::IfOp::create(b, loc, cond, [&](OpBuilder &b, Location loc) {
    fn(b, loc);
    scf::YieldOp::create(b, loc);
  });
}

/// sin(x) and cos(x) in f32 for |x| < 8192, the same on every GPU: Cody-Waite
/// reduction by pi/2 (Cephes' three-part constant; j * DP1 is exact) and
/// Cephes' minimax polynomials on [-pi/4, pi/4] (about 1 ulp). GPUs' own
/// sin/cos lose accuracy fast outside [-pi, pi], and RoPE angles reach
/// thousands of radians.
std::pair<Value, Value> sinCos(OpBuilder &b, Location loc, Value x) {
  auto c = [&](float v) { return f32Const(b, loc, v); };
  auto mul = [&](Value p, Value q) -> Value {
    return arith::MulFOp::create(b, loc, p, q);
  };
  auto add = [&](Value p, Value q) -> Value {
    return arith::AddFOp::create(b, loc, p, q);
  };
  auto sub = [&](Value p, Value q) -> Value {
    return arith::SubFOp::create(b, loc, p, q);
  };
  Value j = math::RoundEvenOp::create(b, loc, mul(x, c(0.63661977236758134f)));
  Value y = sub(
      sub(sub(x, mul(j, c(1.5703125f))), mul(j, c(4.837512969970703125e-4f))),
      mul(j, c(7.54978995489188216e-8f)));
  Value z = mul(y, y);
  Value sinY =
      add(y, mul(mul(z, y), add(c(-1.6666654611e-1f),
                                mul(z, add(c(8.3321608736e-3f),
                                           mul(z, c(-1.9515295891e-4f)))))));
  Value cosY =
      add(sub(c(1.0f), mul(c(0.5f), z)),
          mul(mul(z, z), add(c(4.166664568298827e-2f),
                             mul(z, add(c(-1.388731625493765e-3f),
                                        mul(z, c(2.443315711809948e-5f)))))));
  // Quadrant q = j mod 4: sin = s, c, -s, -c; cos = c, -s, -c, s.
  Value q = arith::AndIOp::create(
      b, loc, arith::FPToSIOp::create(b, loc, b.getI32Type(), j),
      i32Const(b, loc, 3));
  auto is = [&](int v) -> Value {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, q,
                                 i32Const(b, loc, v));
  };
  Value negS = arith::NegFOp::create(b, loc, sinY);
  Value negC = arith::NegFOp::create(b, loc, cosY);
  auto pick = [&](Value v0, Value v1, Value v2, Value v3) -> Value {
    Value r = arith::SelectOp::create(b, loc, is(2), v2, v3);
    r = arith::SelectOp::create(b, loc, is(1), v1, r);
    return arith::SelectOp::create(b, loc, is(0), v0, r);
  };
  return {pick(sinY, cosY, negS, negC), pick(cosY, negS, negC, sinY)};
}

Value expF(OpBuilder &b, Location loc, Value x) {
  auto c = [&](float v) { return f32Const(b, loc, v); };
  auto mul = [&](Value p, Value q) -> Value {
    return arith::MulFOp::create(b, loc, p, q);
  };
  auto add = [&](Value p, Value q) -> Value {
    return arith::AddFOp::create(b, loc, p, q);
  };
  x = arith::MaximumFOp::create(
      b, loc, arith::MinimumFOp::create(b, loc, x, c(88.0f)), c(-87.0f));
  Value y = add(mul(x, c(1.44269504088896341f)), c(0.5f));
  // floor(y) as an integer: truncate, minus one where that rounded up.
  Value ni = arith::FPToSIOp::create(b, loc, b.getI32Type(), y);
  Value up = arith::CmpFOp::create(
      b, loc, arith::CmpFPredicate::OGT,
      arith::SIToFPOp::create(b, loc, b.getF32Type(), ni), y);
  ni = arith::SubIOp::create(
      b, loc, ni, arith::ExtUIOp::create(b, loc, b.getI32Type(), up));
  Value n = arith::SIToFPOp::create(b, loc, b.getF32Type(), ni);
  Value r = add(arith::SubFOp::create(b, loc, x, mul(n, c(0.693359375f))),
                mul(n, c(2.12194440e-4f)));
  Value p = c(1.9875691500e-4f);
  for (float k : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                  1.6666665459e-1f, 5.0000001201e-1f})
    p = add(mul(p, r), c(k));
  p = add(add(mul(mul(p, r), r), r), c(1.0f));
  Value bits = arith::ShLIOp::create(
      b, loc, arith::AddIOp::create(b, loc, ni, i32Const(b, loc, 127)),
      i32Const(b, loc, 23));
  return mul(p, arith::BitcastOp::create(b, loc, b.getF32Type(), bits));
}

Value logF(OpBuilder &b, Location loc, Value x) {
  auto c = [&](float v) { return f32Const(b, loc, v); };
  auto mul = [&](Value p, Value q) -> Value {
    return arith::MulFOp::create(b, loc, p, q);
  };
  auto add = [&](Value p, Value q) -> Value {
    return arith::AddFOp::create(b, loc, p, q);
  };
  // x = 2^e m, m in [0.5, 1); then m in [sqrt(1/2), sqrt(2)) - 1.
  Value bits = arith::BitcastOp::create(b, loc, b.getI32Type(), x);
  Value e = arith::SubIOp::create(
      b, loc,
      arith::AndIOp::create(
          b, loc, arith::ShRUIOp::create(b, loc, bits, i32Const(b, loc, 23)),
          i32Const(b, loc, 0xff)),
      i32Const(b, loc, 126));
  Value m = arith::BitcastOp::create(
      b, loc, b.getF32Type(),
      arith::OrIOp::create(
          b, loc,
          arith::AndIOp::create(b, loc, bits, i32Const(b, loc, 0x807fffff)),
          i32Const(b, loc, 0x3f000000)));
  Value small = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, m,
                                      c(0.707106781186547524f));
  e = arith::SubIOp::create(
      b, loc, e, arith::ExtUIOp::create(b, loc, b.getI32Type(), small));
  m = arith::SubFOp::create(
      b, loc, arith::SelectOp::create(b, loc, small, add(m, m), m), c(1.0f));
  Value ef = arith::SIToFPOp::create(b, loc, b.getF32Type(), e);
  Value z = mul(m, m);
  Value p = c(7.0376836292e-2f);
  for (float k : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f,
                  1.4249322787e-1f, -1.6668057665e-1f, 2.0000714765e-1f,
                  -2.4999993993e-1f, 3.3333331174e-1f})
    p = add(mul(p, m), c(k));
  Value y = add(mul(mul(p, m), z), mul(ef, c(-2.12194440e-4f)));
  y = add(y, mul(z, c(-0.5f)));
  return add(add(m, y), mul(ef, c(0.693359375f)));
}

/// table[i] for an index i < table.size(), from constants (a select chain:
/// SPIR-V has no constant arrays that memref can index).
Value constantAt(OpBuilder &b, Location loc, ArrayRef<float> table, Value i) {
  Value r = f32Const(b, loc, table.back());
  for (int64_t k = (int64_t)table.size() - 2; k >= 0; --k)
    r = arith::SelectOp::create(b, loc,
                                arith::CmpIOp::create(b, loc,
                                                      arith::CmpIPredicate::eq,
                                                      i, indexConst(b, loc, k)),
                                f32Const(b, loc, table[k]), r);
  return r;
}

void inRange(OpBuilder &b, Location loc, Value g, ArrayRef<int64_t> ends,
             function_ref<void(OpBuilder &, Location, int64_t, Value)> fn) {
  std::function<void(OpBuilder &, Location, size_t)> from =
      [&](OpBuilder &b, Location loc, size_t i) {
        Value local = i ? arith::SubIOp::create(b, loc, g,
                                                indexConst(b, loc, ends[i - 1]))
                              .getResult()
                        : g;
        if (i + 1 == ends.size())
          return fn(b, loc, (int64_t)i, local);
        scf::IfOp::create(
            b, loc,
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, g,
                                  indexConst(b, loc, ends[i])),
            [&](OpBuilder &b, Location loc) {
              fn(b, loc, (int64_t)i, local);
              scf::YieldOp::create(b, loc);
            },
            [&](OpBuilder &b, Location loc) {
              from(b, loc, i + 1);
              scf::YieldOp::create(b, loc);
            });
      };
  from(b, loc, 0);
}

Value ternaryShift(OpBuilder &b, Location loc, Value i) {
  Value byte = arith::RemUIOp::create(b, loc, i, indexConst(b, loc, 4));
  Value pair = arith::DivUIOp::create(b, loc, i, indexConst(b, loc, 4));
  Value bits = arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, byte, indexConst(b, loc, 8)),
      arith::MulIOp::create(b, loc, pair, indexConst(b, loc, 2)));
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), bits);
}

Value ternaryBytes(OpBuilder &b, Location loc, Value word, int64_t a) {
  Value codes = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, word, i32Const(b, loc, 2 * a)),
      i32Const(b, loc, 0x03030303));
  // 0x7F + code per byte (no carries), then the top bit flipped: code - 1.
  return arith::XOrIOp::create(
      b, loc,
      arith::AddIOp::create(b, loc, codes, i32Const(b, loc, 0x7F7F7F7F)),
      i32Const(b, loc, (int32_t)0x80808080u));
}

Value dot4(OpBuilder &b, Location loc, Value x, Value y) {
  return func::CallOp::create(b, loc, kDot4Intrinsic, TypeRange{b.getI32Type()},
                              ValueRange{x, y})
      .getResult(0);
}

/// Sign-extended byte `i` (0..3) of a 32-bit word.
Value byteOf(OpBuilder &b, Location loc, Value word, int i) {
  Value up = arith::ShLIOp::create(b, loc, word, i32Const(b, loc, 24 - 8 * i));
  return arith::ShRSIOp::create(b, loc, up, i32Const(b, loc, 24));
}

} // namespace tlc::gpu
