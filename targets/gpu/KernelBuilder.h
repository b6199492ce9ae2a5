// Building blocks of the GPU kernels (gpu.func bodies built with MLIR
// builders): what a kernel receives, its spec, and the loops, reductions
// and loads every kernel shares. Used by FormGPUDispatches (inference) and
// TrainingKernels (backward and optimizer).
#ifndef TLC_TARGETS_GPU_KERNELBUILDER_H
#define TLC_TARGETS_GPU_KERNELBUILDER_H

#include "targets/gpu/Passes.h"

#include <algorithm>
#include <functional>
#include <string>

namespace tlc::gpu {
using namespace mlir;

/// What a kernel body receives: its buffers (operands, then results), the
/// call's scalars as indices, its work unit (workgroup id x) and its lane
/// (invocation id x in the workgroup).
struct KernelArgs {
  ValueRange buffers;
  Value T, pos, rows, unit, lane;
};
using KernelBody =
    std::function<void(OpBuilder &, Location, const KernelArgs &)>;

/// A [rows x cols] float weight bound as consecutive row ranges ("chunks"),
/// so that no binding exceeds the target's storage buffer range (Vulkan
/// guarantees 128 MiB; Adreno has no more). Chunks start at multiples of
/// 256 bytes (every device's storage buffer offset alignment).
struct RowChunks {
  int64_t rows = 0, cols = 0, perChunk = 0; // perChunk 0: a row is too big
  int64_t count() const {
    return perChunk ? (rows + perChunk - 1) / perChunk : 0;
  }
  int64_t first(int64_t c) const { return c * perChunk; }
  int64_t rowsIn(int64_t c) const {
    return std::min(perChunk, rows - first(c));
  }
};

/// The chunks of `weight` ([rows x cols], bf16 or f32) for bindings of at
/// most `maxBindingBytes` (0: no limit, one chunk).
RowChunks rowChunks(ShapedType weight, int64_t maxBindingBytes);

/// A kernel to build once per shape and the workload of its dispatches
/// (workgroups = tokensFactor * T + constant) of `workgroupSize`
/// invocations. `rowChunked` maps an operand (by its index among the op's
/// buffer operands) that the kernel reads as several row-chunk buffers, in
/// place of one, to its chunks.
struct KernelSpec {
  std::string name;
  SmallVector<Type> buffers;
  KernelBody body;
  int64_t tokensFactor = 1, constant = 0;
  int64_t workgroupSize = kWorkgroupSize;
  SmallVector<std::pair<unsigned, RowChunks>> rowChunked;
};

/// Declares operand `operand` of `k` a row-chunked weight: appends its chunk
/// buffers to k.buffers, records it and names the kernel after it. With
/// `wide`, the chunks are arrays of 16-byte vectors (vector<4xi32> holding
/// eight bf16, or vector<4xf32>) for loads of 16 bytes; rows must be a
/// multiple of 16 bytes.
void addWeightChunks(KernelSpec &k, unsigned operand, ShapedType weight,
                     const RowChunks &chunks, bool wide = false);

/// fn(chunk buffer, row within it) for the chunk holding `row`, chosen once
/// (a branch per chunk around fn) rather than per element as loadWeightAt
/// does: a row's loads in fn are then straight-line, all in flight at once.
/// `row` must be uniform over the workgroup when fn has barriers.
Value withRowChunk(OpBuilder &b, Location loc, ValueRange chunks,
                   const RowChunks &c, Value row,
                   function_ref<Value(OpBuilder &, Location, Value, Value)> fn);

/// withRowChunk for an fn with no result.
void forRowChunk(OpBuilder &b, Location loc, ValueRange chunks,
                 const RowChunks &c, Value row,
                 function_ref<void(OpBuilder &, Location, Value, Value)> fn);

/// fn(i, g - ends[i - 1]) for the range [ends[i - 1], ends[i]) holding g
/// (the last range takes any g past it): a chain of branches on g, uniform
/// when g is (a workgroup's work unit), so fn may have barriers.
void inRange(OpBuilder &b, Location loc, Value g, ArrayRef<int64_t> ends,
             function_ref<void(OpBuilder &, Location, int64_t, Value)> fn);

/// weight[row, col] as f32 from its chunk buffers (one: loadWeight).
Value loadWeightAt(OpBuilder &b, Location loc, ValueRange chunks,
                   const RowChunks &c, Type element, Value row, Value col);

int64_t dim(Value v, unsigned i);

Value indexConst(OpBuilder &b, Location loc, int64_t v);

Value f32Const(OpBuilder &b, Location loc, float v);

/// `for i = lane; i < n; i += kWorkgroupSize`: a workgroup's invocations
/// sharing a row.
void forLanes(OpBuilder &b, Location loc, Value lane, int64_t n,
              function_ref<void(OpBuilder &, Value)> fn);

/// Memory shared by a workgroup (a memref.alloc in it: the form every GPU
/// lowering of MLIR turns into workgroup variables). Address space 3 is
/// workgroup memory in SPIR-V's Vulkan mapping, NVVM and ROCDL alike.
Value allocWorkgroup(OpBuilder &b, Location loc, int64_t n, Type element);

/// forLanes up to a run-time bound.
void forLanes(OpBuilder &b, Location loc, Value lane, Value n,
              function_ref<void(OpBuilder &, Value)> fn);

/// `for i = unit * kWorkgroupSize + lane; i < n; i += groups *
/// kWorkgroupSize`: `groups` workgroups sharing a flat range.
void forGrid(OpBuilder &b, Location loc, const KernelArgs &a, int64_t groups,
             int64_t n, function_ref<void(OpBuilder &, Value)> fn);

/// Row work for calls of a few tokens (decode): a row of d elements spread
/// over rowSliceGroups(d) workgroups of one element per invocation
/// (workgroups = rowSliceGroups(d) * T), so a single token still fills the
/// GPU. `fn(t, i)` runs for every element i < d of token t. With
/// `sliced` false, one workgroup per token loops over its row (forLanes):
/// the form for many tokens, whose workgroup count would pass 65535.
int64_t rowSliceGroups(int64_t d);
/// The token whose row this workgroup works on (see forRowElements).
Value rowToken(OpBuilder &b, Location loc, const KernelArgs &a, int64_t d,
               bool sliced);
void forRowElements(OpBuilder &b, Location loc, const KernelArgs &a, int64_t d,
                    bool sliced,
                    function_ref<void(OpBuilder &, Value, Value)> fn);

/// Workgroups for forGrid over n elements: one element per invocation, at
/// most 4096 workgroups (within every device's 65535 limit).
int64_t gridGroups(int64_t n);

/// Folds `fn` over i in [lo, hi) in order, from `init`; `init` when the
/// range is empty (guarded: see stridedFold).
Value foldRange(OpBuilder &b, Location loc, Value lo, Value hi, Value init,
                function_ref<Value(OpBuilder &, Location, Value, Value)> fn);

/// A flat buffer of n elements.
MemRefType flatOf(int64_t n, Type element);

/// Folds `fn` over i = lane, lane + kWorkgroupSize, ... < n from `init`.
/// An invocation with no element takes `init` from a branch: MLIR's SPIR-V
/// conversion reads an scf.for's result from a variable only its body
/// stores, so a loop that runs zero times would give an undefined value
/// (lavapipe happens to read 0, NVIDIA reads garbage).
Value stridedFold(OpBuilder &b, Location loc, Value lane, Value n, Value init,
                  function_ref<Value(OpBuilder &, Location, Value, Value)> fn);

/// Folds `fn` over i = lo, lo + step, ... < hi from `init` (`init` when
/// there is none, guarded as in stridedFold).
Value foldStep(OpBuilder &b, Location loc, Value lo, Value hi, int64_t step,
               Value init,
               function_ref<Value(OpBuilder &, Location, Value, Value)> fn);

/// stridedFold over a constant n (i = lane, lane + stride, ... < n),
/// unrolled whole: a one-token row's loads are all in flight at once
/// instead of four at a time. Same order, same result. For at most
/// kFlatFoldMax / kWorkgroupSize elements per invocation.
inline constexpr int64_t kFlatFoldMax = 8192;
Value stridedFoldFlat(
    OpBuilder &b, Location loc, Value lane, int64_t n, Value init,
    function_ref<Value(OpBuilder &, Location, Value, Value)> fn,
    int64_t stride = kWorkgroupSize);

MemRefType rowsOf(int64_t tm, int64_t d, Type element);

/// Float weights on the GPU: f32 as they are; bf16 as 32-bit words holding
/// two values each (no 16-bit storage needed: every Vulkan device reads it).
Type weightBuffer(ShapedType t);

/// Element `flat` of a weight buffer of weightBuffer(t), as f32 (bf16: the
/// high half of an f32 word, exactly).
Value loadWeight(OpBuilder &b, Location loc, Value buffer, Type element,
                 ValueRange indices, Value flat);

Value i32Const(OpBuilder &b, Location loc, int32_t v);

Value toIndex(OpBuilder &b, Location loc, Value v);

/// Scratch for workgroupReduce: one slot per invocation and the result.
Value reduceScratch(OpBuilder &b, Location loc);

/// Combines one value per invocation over the workgroup in a fixed order
/// (invocation 0 folds the kWorkgroupSize values in lane order, so results
/// do not depend on scheduling); every invocation gets the result.
Value workgroupReduce(
    OpBuilder &b, Location loc, Value scratch, Value lane, Value v,
    function_ref<Value(OpBuilder &, Location, Value, Value)> combine);

/// workgroupReduce for workgroups of `lanes` invocations, a multiple of 16
/// (scratch: wideReduceScratch(lanes)): 16 invocations each fold lanes / 16
/// consecutive values in lane order, then every invocation folds those 16 in
/// order. A fixed order, two short chains instead of one long one.
Value wideReduceScratch(OpBuilder &b, Location loc, int64_t lanes);
Value wideReduce(
    OpBuilder &b, Location loc, Value scratch, Value lane, int64_t lanes,
    Value v, function_ref<Value(OpBuilder &, Location, Value, Value)> combine);

/// The f32 elements of a loaded weight vector: vector<n x f32> as they are,
/// vector<n x i32> as 2n bf16 (2j the low half of word j, 2j + 1 the high).
SmallVector<Value> weightElements(OpBuilder &b, Location loc, Value vector);

/// Four values quantized as the CPU kernels do (clamp(roundeven(v * scale),
/// -128, 127)) and packed into an i32 word, value i in byte i.
Value quantizeWord(OpBuilder &b, Location loc, ArrayRef<Value> four,
                   Value scale);

/// Tiled products C[i][j] = sum_k A[i][k] B[j][k] (k ascending, f32 fma):
/// a workgroup computes a kTile x kTile tile of C, each invocation
/// kMicro x kMicro of it, over blocks of kTileK values of k staged in
/// workgroup memory.
inline constexpr int64_t kTile = 64, kTileK = 16, kMicro = 8;
/// Functions of at least this many tokens per call use tiled products.
inline constexpr int64_t kTiledMinTokens = 16;

/// Stages k-block `kBlock` of the tile's operands, called by every
/// invocation: aTile[kk * kTile + i] = A[i][kBlock * kTileK + kk], and
/// bTile[kk * kTile + j] = B[j][...] likewise (f32 workgroup memory).
using TileFill = function_ref<void(OpBuilder &, Location, Value kBlock,
                                   Value aTile, Value bTile)>;

/// An invocation's part of a tile: acc[i * micro + j] is C at tile row
/// row(i) and tile column col(j) (micro = kMicro but for tiledDotProduct's
/// smaller tiles; rows and columns are kMicro apart either way).
struct TileResult {
  SmallVector<Value> acc;
  Value ty, tx;
  Value row(OpBuilder &b, Location loc, int64_t i) const;
  Value col(OpBuilder &b, Location loc, int64_t j) const;
};

/// The tile product over `kBlocks` blocks (at least one). Must be reached
/// by the whole workgroup (it has barriers).
TileResult tiledProduct(OpBuilder &b, Location loc, Value lane, int64_t kBlocks,
                        const TileFill &fill);

/// Tiled int8 products with the packed 4 x int8 dot product (dot4):
/// C[i][j] = sum over words w of dot4(A[i][w], B[j][w]), exact in i32, over
/// blocks of `words` words (4 values each) staged as packed int8. Tiles are
/// 8 * micro square (64 or 32: each invocation micro x micro of it; rows
/// and columns row(i), col(j) as TileResult says). The fill stores word w
/// of tile row i at aWords[w * (tile + 1) + i] (and B's likewise); the
/// stride is padded so that a row's consecutive words fall in different
/// banks.
using DotTileFill = function_ref<void(OpBuilder &, Location, Value kBlock,
                                      Value aWords, Value bWords)>;
TileResult tiledDotProduct(OpBuilder &b, Location loc, Value lane,
                           int64_t kBlocks, int64_t words, int64_t micro,
                           const DotTileFill &fill);

/// Kernels of tiled products over a [tm x cols] output: one workgroup per
/// tile x tile tile (sets k's workload).
void tileWorkload(KernelSpec &k, int64_t tm, int64_t cols,
                  int64_t tile = kTile);

/// The workgroup's output tile (first row, first column) of a [T x cols]
/// output; `fn` runs only where the tile starts below T (a uniform branch:
/// barriers inside it are safe).
void forOutputTile(
    OpBuilder &b, Location loc, const KernelArgs &a, int64_t cols,
    function_ref<void(OpBuilder &, Location, Value row0, Value col0)> fn,
    int64_t tile = kTile);

/// Weight `i` (0-15) of a t2-rows code word (sixteen 2-bit codes, value + 1)
/// as i32 -1, 0 or 1.
Value ternaryAt(OpBuilder &b, Location loc, Value word, int64_t i);

/// The bit offset (i32) of code `i` (an index, 0-15) in a t2-rows word.
Value ternaryShift(OpBuilder &b, Location loc, Value i);

/// Weights 4a .. 4a + 3 of a t2-rows code word as four packed int8 (-1, 0,
/// 1), in the byte order of packed activations.
Value ternaryBytes(OpBuilder &b, Location loc, Value word, int64_t a);

/// The dot product of two words of four packed int8: a call of
/// kDot4Intrinsic (declared by FormGPUDispatches with integer-dot; the
/// backend lowers it to its instruction).
Value dot4(OpBuilder &b, Location loc, Value x, Value y);

Value addF(OpBuilder &b, Location loc, Value x, Value y);

Value maxF(OpBuilder &b, Location loc, Value x, Value y);

/// `fn(b)` only in invocations where `cond` holds.
void when(OpBuilder &b, Location loc, Value cond,
          function_ref<void(OpBuilder &, Location)> fn);

/// sin(x) and cos(x) in f32 for |x| < 8192, the same on every GPU: Cody-Waite
/// reduction by pi/2 (Cephes' three-part constant; j * DP1 is exact) and
/// Cephes' minimax polynomials on [-pi/4, pi/4] (about 1 ulp). GPUs' own
/// sin/cos lose accuracy fast outside [-pi, pi], and RoPE angles reach
/// thousands of radians.
std::pair<Value, Value> sinCos(OpBuilder &b, Location loc, Value x);

/// exp(x) in f32 as the CPU kernels compute it (tlc_expf of
/// targets/llvm-cpu/kernels/mathf.h: 2^n times a Cephes polynomial, ~2
/// ulp, x clamped to [-87, 88]). GPUs' own exp is looser (Vulkan allows
/// 3 + 2|x| ulp; lavapipe's is ~1e-6 relative), enough to flip an int8
/// activation rounding downstream.
Value expF(OpBuilder &b, Location loc, Value x);

/// log(x) in f32 for normal x > 0 (Cephes' logf, ~1 ulp).
Value logF(OpBuilder &b, Location loc, Value x);

/// table[i] for an index i < table.size(), from constants (a select chain:
/// SPIR-V has no constant arrays that memref can index).
Value constantAt(OpBuilder &b, Location loc, ArrayRef<float> table, Value i);

/// Sign-extended byte `i` (0..3) of a 32-bit word.
Value byteOf(OpBuilder &b, Location loc, Value word, int i);

/// Terse arithmetic for kernel bodies (f32 unless named i...).
struct E {
  OpBuilder &b;
  Location loc;
  Value c(int64_t v) { return indexConst(b, loc, v); }
  Value f(float v) { return f32Const(b, loc, v); }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, loc, x, y); }
  Value max(Value x, Value y) {
    return arith::MaximumFOp::create(b, loc, x, y);
  }
  Value min(Value x, Value y) {
    return arith::MinimumFOp::create(b, loc, x, y);
  }
  /// x * y + acc, rounded once.
  Value fma(Value x, Value y, Value acc) {
    return math::FmaOp::create(b, loc, x, y, acc);
  }
  Value exp(Value x) { return expF(b, loc, x); }
  Value log(Value x) { return logF(b, loc, x); }
  Value sqrt(Value x) { return math::SqrtOp::create(b, loc, x); }
  Value iadd(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value isub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value imul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value idiv(Value x, Value y) { return arith::DivUIOp::create(b, loc, x, y); }
  Value irem(Value x, Value y) { return arith::RemUIOp::create(b, loc, x, y); }
  Value ult(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, x, y);
  }
  Value ieq(Value x, Value y) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, x, y);
  }
  Value fgt(Value x, Value y) {
    return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x, y);
  }
  Value feq(Value x, Value y) {
    return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, x, y);
  }
  Value sel(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value ld(Value buffer, ValueRange at) {
    return memref::LoadOp::create(b, loc, buffer, at);
  }
  void st(Value v, Value buffer, ValueRange at) {
    memref::StoreOp::create(b, loc, v, buffer, at);
  }
  /// labels[t] >= 0 (an i32 label).
  Value valid(Value label) {
    return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, label,
                                 i32Const(b, loc, 0));
  }
  /// Word i of a buffer of f32 words, read as i32.
  Value bitsAt(Value buffer, int64_t i) {
    return arith::BitcastOp::create(b, loc, b.getI32Type(), ld(buffer, c(i)));
  }
};

/// A kernel body's builder and location as an E.
#define TLC_E(b, loc)                                                          \
  E e { b, loc }

/// Builds `spec`'s kernel on first use and dispatches it at `b` on
/// `operands` (buffers read, or updated in place) with `results`.
using Dispatcher =
    std::function<tlora::DispatchOp(OpBuilder &b, const KernelSpec &spec,
                                    ValueRange operands, TypeRange results)>;

/// Whether `op` is a training op: a backward, loss or optimizer op.
bool isTrainingOp(Operation *op);

/// Replaces training op `op` (of a function of at most `tm` tokens per
/// call) by dispatches of its kernels, or emits an error naming it;
/// `maxBinding` as FormGPUDispatches' max-binding-bytes.
LogicalResult formTrainingDispatches(Operation *op, int64_t tm,
                                     int64_t maxBinding,
                                     const Dispatcher &dispatch);

} // namespace tlc::gpu

#endif // TLC_TARGETS_GPU_KERNELBUILDER_H
