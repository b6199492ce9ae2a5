// The GPU kernels of LoRA training: the backward ops, the fused cross
// entropy, the mean loss and the optimizer (the contracts of the CPU's
// targets/llvm-cpu/kernels/train.h, built as gpu.func kernels).
//
// No atomics: every sum runs in a fixed order (a lane's strided elements,
// then workgroupReduce in lane order, or one invocation's loop), so a step
// gives the same bits on every call and a resumed run matches an
// uninterrupted one. Ops whose sums cross tokens take two kernels (LoRA
// weights, attention's keys and values).
#include "targets/gpu/KernelBuilder.h"

#include "dialects/tlora/Transforms/Passes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <limits>

using namespace mlir;
using namespace mlir::tlora;

namespace tlc::gpu {
namespace {


Type f32Of(MLIRContext *ctx) { return Float32Type::get(ctx); }
Type i32Of(MLIRContext *ctx) { return IntegerType::get(ctx, 32); }
std::string hexOf(float v) {
  return llvm::utohexstr(llvm::bit_cast<uint32_t>(v));
}
const char *suffixOf(Type et) { return et.isBF16() ? "bf16" : "f32"; }

/// a . b over d in [0, n) for rows at (ra, aBase) and (rb, bBase).
Value dotRows(OpBuilder &b, Location loc, Value x, Value rx, Value xBase,
              Value y, Value ry, Value yBase, int64_t n) {
  TLC_E(b, loc);
  return foldRange(b, loc, e.c(0), e.c(n), e.f(0),
                   [&](OpBuilder &b, Location loc, Value d, Value acc) {
                     TLC_E(b, loc);
                     return e.fma(e.ld(x, {rx, e.iadd(xBase, d)}), e.ld(y, {ry, e.iadd(yBase, d)}), acc);
                   });
}

/// x . y as an unevaluated sum hi + lo, nearly as exact as in double:
/// Ogita-Rump-Oishi Dot2 (products split by fma, sums by TwoSum).
std::pair<Value, Value> dotRowsExact(OpBuilder &b, Location loc, Value x,
                                     Value rx, Value xBase, Value y, Value ry,
                                     Value yBase, int64_t n) {
  TLC_E(b, loc);
  auto loop = scf::ForOp::create(
      b, loc, e.c(0), e.c(n), e.c(1), ValueRange{e.f(0), e.f(0)},
      [&](OpBuilder &b, Location loc, Value d, ValueRange acc) {
        TLC_E(b, loc);
        Value xv = e.ld(x, {rx, e.iadd(xBase, d)});
        Value yv = e.ld(y, {ry, e.iadd(yBase, d)});
        Value p = e.mul(xv, yv);
        Value pErr = e.fma(xv, yv, arith::NegFOp::create(b, loc, p));
        Value sum = e.add(acc[0], p);
        Value z = e.sub(sum, acc[0]);
        Value sErr = e.add(e.sub(acc[0], e.sub(sum, z)), e.sub(p, z));
        scf::YieldOp::create(
            b, loc, ValueRange{sum, e.add(acc[1], e.add(sErr, pErr))});
      });
  Value s = loop.getResult(0), c = loop.getResult(1);
  Value hi = e.add(s, c);
  return {hi, e.sub(c, e.sub(hi, s))};
}

/// The fields of tlc_train_hyper_t (runtime/include/tlc/train_abi.h) as
/// f32 word indices.
enum Hyper : int64_t {
  kLr = 0, kBeta1, kBeta2, kEps, kWeightDecay, kMaxGradNorm, kLossScale,
  kStepSize, kBiasCorrection2Sqrt, kApply, kGradNorm, kHyperWords = 16
};

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

/// dx = r w dy - x r^3 sum(w dy x) / D, r = 1/sqrt(mean(x^2) + eps); one
/// token per workgroup.
KernelSpec rmsNormGradKernel(RMSNormGradOp op, int64_t tm) {
  int64_t D = dim(op.getInput(), 1);
  auto wt = cast<ShapedType>(op.getWeight().getType());
  Type et = wt.getElementType(), f32 = f32Of(op.getContext());
  float eps = op.getEpsilon().convertToFloat();
  KernelSpec k;
  k.name = llvm::formatv("rms_norm_grad_d{0}_{1}_eps{2}", D, suffixOf(et),
                         hexOf(eps));
  k.buffers = {rowsOf(tm, D, f32), weightBuffer(wt), rowsOf(tm, D, f32),
               rowsOf(tm, D, f32)};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value x = a.buffers[0], w = a.buffers[1], dy = a.buffers[2],
          dx = a.buffers[3];
    auto wdy = [&](OpBuilder &b, Location loc, Value d) {
      TLC_E(b, loc);
      return e.mul(loadWeight(b, loc, w, et, {d}, d), e.ld(dy, {a.unit, d}));
    };
    Value scratch = reduceScratch(b, loc);
    Value ss = stridedFold(b, loc, a.lane, e.c(D), e.f(0),
                           [&](OpBuilder &b, Location loc, Value d, Value acc) {
                             TLC_E(b, loc);
                             Value v = e.ld(x, {a.unit, d});
                             return e.fma(v, v, acc);
                           });
    Value sd = stridedFold(b, loc, a.lane, e.c(D), e.f(0),
                           [&](OpBuilder &b, Location loc, Value d, Value acc) {
                             TLC_E(b, loc);
                             return e.fma(wdy(b, loc, d), e.ld(x, {a.unit, d}), acc);
                           });
    Value sumSq = workgroupReduce(b, loc, scratch, a.lane, ss, addF);
    Value sumWdyX = workgroupReduce(b, loc, scratch, a.lane, sd, addF);
    Value r = e.div(e.f(1), e.sqrt(e.add(e.div(sumSq, e.f((float)D)),
                                         e.f(eps))));
    Value c = e.div(e.mul(e.mul(e.mul(r, r), r), sumWdyX), e.f((float)D));
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      TLC_E(b, loc);
      e.st(e.sub(e.mul(r, wdy(b, loc, d)), e.mul(e.ld(x, {a.unit, d}), c)),
           dx, {a.unit, d});
    });
  };
  return k;
}

/// dx[t, k] = gamma * sum_n dy[t, n] W[n, k] on the t2-rows codes, n
/// ascending; one invocation per (t, k), workgroups over 64 columns.
KernelSpec ternaryMatmulTransposedKernel(int64_t N, int64_t K, int64_t tm,
                                         MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("ternary_matmul_t_n{0}_k{1}", N, K);
  k.buffers = {rowsOf(tm, N, f32Of(ctx)), flatOf(16 + N * K / 16, i32Of(ctx)),
               rowsOf(tm, K, f32Of(ctx))};
  int64_t blocks = (K + kWorkgroupSize - 1) / kWorkgroupSize;
  k.tokensFactor = blocks;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value dy = a.buffers[0], w = a.buffers[1], dx = a.buffers[2];
    Value t = e.idiv(a.unit, e.c(blocks));
    Value col = e.iadd(e.imul(e.irem(a.unit, e.c(blocks)), e.c(kWorkgroupSize)),
                       a.lane);
    when(b, loc, e.ult(col, e.c(K)), [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      Value word = e.iadd(e.c(16), e.idiv(col, e.c(16)));
      Value shift = ternaryShift(b, loc, e.irem(col, e.c(16)));
      Value sum = foldRange(
          b, loc, e.c(0), e.c(N), e.f(0),
          [&](OpBuilder &b, Location loc, Value n, Value acc) {
            TLC_E(b, loc);
            Value codes = e.ld(w, e.iadd(word, e.imul(n, e.c(K / 16))));
            Value code = arith::AndIOp::create(
                b, loc, arith::ShRUIOp::create(b, loc, codes, shift),
                i32Const(b, loc, 3));
            Value g = e.ld(dy, {t, n});
            Value v = e.sel(
                arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, code,
                                      i32Const(b, loc, 2)),
                g,
                e.sel(arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                            code, i32Const(b, loc, 0)),
                      arith::NegFOp::create(b, loc, g), e.f(0)));
            return e.add(acc, v);
          });
      Value gamma = arith::BitcastOp::create(b, loc, b.getF32Type(),
                                             e.ld(w, e.c(0)));
      e.st(e.mul(sum, gamma), dx, {t, col});
    });
  };
  return k;
}

/// The same, tiled (tiledProduct) for 16+ tokens: a workgroup per 64
/// tokens x 64 columns k; per block of 16 rows n its invocations stage
/// dy[t, n] and the rows' code words (4 per row), decoded. Sums in the same
/// order (n ascending, x * 1 and x * -1 exact) as the kernel above.
KernelSpec ternaryMatmulTransposedTiledKernel(int64_t N, int64_t K, int64_t tm,
                                              MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("ternary_matmul_t_tiled_n{0}_k{1}", N, K);
  k.buffers = {rowsOf(tm, N, f32Of(ctx)), flatOf(16 + N * K / 16, i32Of(ctx)),
               rowsOf(tm, K, f32Of(ctx))};
  tileWorkload(k, tm, K);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value dy = a.buffers[0], w = a.buffers[1], dx = a.buffers[2];
    forOutputTile(b, loc, a, K, [&](OpBuilder &b, Location loc, Value row0,
                                     Value col0) {
      TLC_E(b, loc);
      auto fill = [&](OpBuilder &b, Location loc, Value kb, Value aTile,
                      Value bTile) {
        TLC_E(b, loc);
        Value nn = e.irem(a.lane, e.c(16));
        for (int64_t r = 0; r < 16; ++r) {
          Value row = e.iadd(e.c(r * 4), e.idiv(a.lane, e.c(16)));
          Value t = arith::MinUIOp::create(b, loc, e.iadd(row0, row),
                                           e.c(tm - 1));
          e.st(e.ld(dy, {t, e.iadd(e.imul(kb, e.c(16)), nn)}), aTile,
               e.iadd(e.imul(nn, e.c(kTile)), row));
        }
        // Row kb * 16 + lane / 4, its code word lane % 4 of the tile.
        Value rowInBlock = e.idiv(a.lane, e.c(4)), wq = e.irem(a.lane, e.c(4));
        Value n = e.iadd(e.imul(kb, e.c(16)), rowInBlock);
        Value wordCol = arith::MinUIOp::create(
            b, loc, e.iadd(e.idiv(col0, e.c(16)), wq), e.c(K / 16 - 1));
        Value codes = e.ld(w, e.iadd(e.iadd(e.c(16), e.imul(n, e.c(K / 16))),
                                     wordCol));
        Value base = e.iadd(e.imul(rowInBlock, e.c(kTile)), e.imul(wq, e.c(16)));
        for (int64_t c = 0; c < 16; ++c)
          e.st(arith::SIToFPOp::create(b, loc, b.getF32Type(),
                                       ternaryAt(b, loc, codes, c)),
               bTile, e.iadd(base, e.c(c)));
      };
      TileResult r = tiledProduct(b, loc, a.lane, N / 16, fill);
      Value gamma = arith::BitcastOp::create(b, loc, b.getF32Type(),
                                             e.ld(w, e.c(0)));
      for (int64_t i = 0; i < kMicro; ++i) {
        Value t = e.iadd(row0, r.row(b, loc, i));
        for (int64_t j = 0; j < kMicro; ++j) {
          Value col = e.iadd(col0, r.col(b, loc, j));
          when(b, loc,
               arith::AndIOp::create(b, loc, e.ult(t, a.T), e.ult(col, e.c(K))),
               [&](OpBuilder &b, Location loc) {
                 TLC_E(b, loc);
                 e.st(e.mul(r.acc[i * kMicro + j], gamma), dx, {t, col});
               });
        }
      }
    });
  };
  return k;
}

/// LoRA backward, per token (one workgroup each): u = x A^T and
/// du = scale dy B into ud[t] = [u, du], and dx = du A.
KernelSpec loraGradRowsKernel(int64_t R, int64_t K, int64_t N, float scale,
                              int64_t tm, MLIRContext *ctx) {
  Type f32 = f32Of(ctx);
  KernelSpec k;
  k.name = llvm::formatv("lora_grad_rows_r{0}_k{1}_n{2}_s{3}", R, K, N,
                         hexOf(scale));
  k.buffers = {rowsOf(tm, K, f32), flatOf(R * K, f32), flatOf(N * R, f32),
               rowsOf(tm, N, f32), rowsOf(tm, 2 * R, f32), rowsOf(tm, K, f32)};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value x = a.buffers[0], A = a.buffers[1], B = a.buffers[2],
          dy = a.buffers[3], ud = a.buffers[4], dx = a.buffers[5];
    Value scratch = reduceScratch(b, loc);
    // du in workgroup memory for the dx loop; a loop over r (not unrolled:
    // kernel size stays flat in the rank).
    Value duAll = allocWorkgroup(b, loc, R, b.getF32Type());
    scf::ForOp::create(
        b, loc, e.c(0), e.c(R), e.c(1), ValueRange{},
        [&](OpBuilder &b, Location loc, Value r, ValueRange) {
          TLC_E(b, loc);
          Value rowA = e.imul(r, e.c(K));
          Value pu = stridedFold(
              b, loc, a.lane, e.c(K), e.f(0),
              [&](OpBuilder &b, Location loc, Value kk, Value acc) {
                TLC_E(b, loc);
                return e.fma(e.ld(x, {a.unit, kk}), e.ld(A, e.iadd(rowA, kk)),
                             acc);
              });
          Value u = workgroupReduce(b, loc, scratch, a.lane, pu, addF);
          Value pd = stridedFold(
              b, loc, a.lane, e.c(N), e.f(0),
              [&](OpBuilder &b, Location loc, Value n, Value acc) {
                TLC_E(b, loc);
                return e.fma(e.ld(dy, {a.unit, n}),
                             e.ld(B, e.iadd(e.imul(n, e.c(R)), r)), acc);
              });
          Value du = e.mul(workgroupReduce(b, loc, scratch, a.lane, pd, addF),
                           e.f(scale));
          when(b, loc, e.ieq(a.lane, e.c(0)), [&](OpBuilder &b, Location loc) {
            TLC_E(b, loc);
            e.st(u, ud, {a.unit, r});
            e.st(du, ud, {a.unit, e.iadd(e.c(R), r)});
            e.st(du, duAll, r);
          });
          scf::YieldOp::create(b, loc);
        });
    mlir::gpu::BarrierOp::create(b, loc);
    forLanes(b, loc, a.lane, K, [&](OpBuilder &b, Value kk) {
      TLC_E(b, loc);
      Value s = foldRange(b, loc, e.c(0), e.c(R), e.f(0),
                          [&](OpBuilder &b, Location loc, Value r, Value acc) {
                            TLC_E(b, loc);
                            return e.add(acc, e.mul(e.ld(duAll, r),
                                                    e.ld(A, e.iadd(e.imul(r, e.c(K)), kk))));
                          });
      e.st(s, dx, {a.unit, kk});
    });
  };
  return k;
}

/// LoRA weight gradients over all tokens (t ascending): workgroups
/// [0, ceil(K/64)) give 64 columns k of dA[r][k] = sum_t du[t][r] x[t][k],
/// the next ceil(N/64) 64 rows n of dB[n][r] = scale sum_t dy[t][n] u[t][r].
KernelSpec loraGradWeightsKernel(int64_t R, int64_t K, int64_t N, float scale,
                                 int64_t tm, MLIRContext *ctx) {
  Type f32 = f32Of(ctx);
  KernelSpec k;
  k.name = llvm::formatv("lora_grad_weights_r{0}_k{1}_n{2}_s{3}", R, K, N,
                         hexOf(scale));
  k.buffers = {rowsOf(tm, K, f32), rowsOf(tm, N, f32), rowsOf(tm, 2 * R, f32),
               flatOf(R * K, f32), flatOf(N * R, f32)};
  int64_t unitsA = (K + kWorkgroupSize - 1) / kWorkgroupSize;
  k.tokensFactor = 0;
  k.constant = unitsA + (N + kWorkgroupSize - 1) / kWorkgroupSize;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value x = a.buffers[0], dy = a.buffers[1], ud = a.buffers[2],
          dA = a.buffers[3], dB = a.buffers[4];
    // Per r: the sum over tokens of ud[t][udCol] * other[t][at].
    auto overTokens = [&](OpBuilder &b, Location loc, Value other, Value at,
                          Value udCol) {
      TLC_E(b, loc);
      return foldRange(b, loc, e.c(0), a.T, e.f(0),
                       [&](OpBuilder &b, Location loc, Value t, Value acc) {
                         TLC_E(b, loc);
                         return e.fma(e.ld(ud, {t, udCol}), e.ld(other, {t, at}), acc);
                       });
    };
    auto forR = [&](OpBuilder &b, Location loc,
                    function_ref<void(OpBuilder &, Location, Value)> fn) {
      scf::ForOp::create(b, loc, indexConst(b, loc, 0), indexConst(b, loc, R),
                         indexConst(b, loc, 1), ValueRange{},
                         [&](OpBuilder &b, Location loc, Value r, ValueRange) {
                           fn(b, loc, r);
                           scf::YieldOp::create(b, loc);
                         });
    };
    scf::IfOp::create(
        b, loc, e.ult(a.unit, e.c(unitsA)),
        [&](OpBuilder &b, Location loc) {
          TLC_E(b, loc);
          Value col = e.iadd(e.imul(a.unit, e.c(kWorkgroupSize)), a.lane);
          when(b, loc, e.ult(col, e.c(K)), [&](OpBuilder &b, Location loc) {
            forR(b, loc, [&](OpBuilder &b, Location loc, Value r) {
              TLC_E(b, loc);
              Value s = overTokens(b, loc, x, col, e.iadd(e.c(R), r));
              e.st(s, dA, e.iadd(e.imul(r, e.c(K)), col));
            });
          });
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location loc) {
          TLC_E(b, loc);
          Value n = e.iadd(
              e.imul(e.isub(a.unit, e.c(unitsA)), e.c(kWorkgroupSize)),
              a.lane);
          when(b, loc, e.ult(n, e.c(N)), [&](OpBuilder &b, Location loc) {
            forR(b, loc, [&](OpBuilder &b, Location loc, Value r) {
              TLC_E(b, loc);
              Value s = overTokens(b, loc, dy, n, r);
              e.st(e.mul(s, e.f(scale)), dB, e.iadd(e.imul(n, e.c(R)), r));
            });
          });
          scf::YieldOp::create(b, loc);
        });
  };
  return k;
}

/// Forward m = relu(g)^2 u: dg = dm u 2 relu(g), du = dm relu(g)^2.
KernelSpec squaredReluMulGradKernel(int64_t D, int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("squared_relu_mul_grad_d{0}", D);
  Type rows = rowsOf(tm, D, f32Of(ctx));
  k.buffers = {rows, rows, rows, rows, rows};
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forLanes(b, loc, a.lane, D, [&](OpBuilder &b, Value d) {
      TLC_E(b, loc);
      Value r = e.max(e.ld(a.buffers[0], {a.unit, d}), e.f(0));
      Value dm = e.ld(a.buffers[2], {a.unit, d});
      e.st(e.mul(e.mul(dm, e.ld(a.buffers[1], {a.unit, d})), e.mul(e.f(2), r)),
           a.buffers[3], {a.unit, d});
      e.st(e.mul(dm, e.mul(r, r)), a.buffers[4], {a.unit, d});
    });
  };
  return k;
}

/// Shapes of causal attention over packed sequences of S tokens.
struct AttentionShape {
  int64_t H, KVH, HD, S;
  float scale;
  int64_t DQ() const { return H * HD; }
  int64_t DKV() const { return KVH * HD; }
  std::string key() const {
    return llvm::formatv("s{0}_h{1}_kv{2}_hd{3}_sc{4}", S, H, KVH, HD,
                         hexOf(scale));
  }
};

/// Vulkan guarantees 16 KiB of workgroup memory: `arrays` arrays of S
/// floats and the reduction scratch must fit.
LogicalResult checkWorkgroupMemory(Operation *op, int64_t S, int arrays) {
  int64_t most = (16384 / 4 - kWorkgroupSize - 1) / arrays;
  if (S <= most)
    return success();
  return op->emitOpError("the GPU kernel keeps ")
         << arrays << " row(s) of scores in 16 KiB of workgroup memory: "
         << "seq_len at most " << most << ", got " << S;
}

/// Forward with lse, workgroup (token t, head h): keys of t's sequence up
/// to t; eager softmax (scale, minus max, exp, / sum) as the CPU kernel;
/// lse[t][h] = max + log(sum).
KernelSpec causalAttentionKernel(const AttentionShape &s, int64_t tm,
                                 MLIRContext *ctx) {
  Type f32 = f32Of(ctx);
  KernelSpec k;
  k.name = "causal_attention_" + s.key();
  k.buffers = {rowsOf(tm, s.DQ(), f32), rowsOf(tm, s.DKV(), f32),
               rowsOf(tm, s.DKV(), f32), rowsOf(tm, s.DQ(), f32),
               rowsOf(tm, s.H, f32)};
  k.tokensFactor = s.H;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value q = a.buffers[0], kb = a.buffers[1], vb = a.buffers[2],
          o = a.buffers[3], lse = a.buffers[4];
    Value t = e.idiv(a.unit, e.c(s.H)), h = e.irem(a.unit, e.c(s.H));
    Value qBase = e.imul(h, e.c(s.HD));
    Value kBase = e.imul(e.idiv(h, e.c(s.H / s.KVH)), e.c(s.HD));
    Value j0 = e.imul(e.idiv(t, e.c(s.S)), e.c(s.S));
    Value len = e.iadd(e.isub(t, j0), e.c(1));
    Value scores = allocWorkgroup(b, loc, s.S, b.getF32Type());
    Value scratch = reduceScratch(b, loc);
    Value ninf = e.f(-std::numeric_limits<float>::infinity());
    // Scores as hi + lo (dotRowsExact): softmax weights of near-equal top
    // scores in the hundreds would otherwise carry the f32 rounding of the
    // scores (1e-5 relative), enough to flip int8 activation roundings
    // downstream.
    Value scoresLo = allocWorkgroup(b, loc, s.S, b.getF32Type());
    Value localMax = stridedFold(
        b, loc, a.lane, len, ninf,
        [&](OpBuilder &b, Location loc, Value j, Value m) {
          TLC_E(b, loc);
          auto [hi, lo] = dotRowsExact(b, loc, q, t, qBase, kb, e.iadd(j0, j),
                                       kBase, s.HD);
          Value sc = e.mul(hi, e.f(s.scale));
          e.st(sc, scores, j);
          e.st(e.mul(lo, e.f(s.scale)), scoresLo, j);
          return e.max(m, sc);
        });
    Value m = workgroupReduce(b, loc, scratch, a.lane, localMax, maxF);
    Value localSum = stridedFold(
        b, loc, a.lane, len, e.f(0),
        [&](OpBuilder &b, Location loc, Value j, Value acc) {
          TLC_E(b, loc);
          Value x = e.exp(e.add(e.sub(e.ld(scores, j), m), e.ld(scoresLo, j)));
          e.st(x, scores, j);
          return e.add(acc, x);
        });
    Value sum = workgroupReduce(b, loc, scratch, a.lane, localSum, addF);
    forLanes(b, loc, a.lane, s.HD, [&](OpBuilder &b, Value d) {
      TLC_E(b, loc);
      Value col = e.iadd(kBase, d);
      Value acc = foldRange(
          b, loc, e.c(0), len, e.f(0),
          [&](OpBuilder &b, Location loc, Value j, Value acc) {
            TLC_E(b, loc);
            return e.fma(e.ld(scores, j), e.ld(vb, {e.iadd(j0, j), col}), acc);
          });
      e.st(e.div(acc, sum), o, {t, e.iadd(qBase, d)});
    });
    when(b, loc, e.ieq(a.lane, e.c(0)), [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      e.st(e.add(m, e.log(sum)), lse, {t, h});
    });
  };
  return k;
}

/// Backward, query side: workgroup (query i, head h); with
/// p_j = exp(scale q_i.k_j - lse_i), D_i = dout_i.o_i and
/// ds_j = p_j (dout_i.v_j - D_i): dq_i = scale sum_j ds_j k_j (j ascending).
KernelSpec causalAttentionGradQKernel(const AttentionShape &s, int64_t tm,
                                      MLIRContext *ctx) {
  Type f32 = f32Of(ctx);
  Type qRows = rowsOf(tm, s.DQ(), f32), kvRows = rowsOf(tm, s.DKV(), f32);
  KernelSpec k;
  k.name = "causal_attention_grad_q_" + s.key();
  k.buffers = {qRows, kvRows, kvRows, qRows, rowsOf(tm, s.H, f32), qRows,
               qRows};
  k.tokensFactor = s.H;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value q = a.buffers[0], kb = a.buffers[1], vb = a.buffers[2],
          o = a.buffers[3], lse = a.buffers[4], dout = a.buffers[5],
          dq = a.buffers[6];
    Value t = e.idiv(a.unit, e.c(s.H)), h = e.irem(a.unit, e.c(s.H));
    Value qBase = e.imul(h, e.c(s.HD));
    Value kBase = e.imul(e.idiv(h, e.c(s.H / s.KVH)), e.c(s.HD));
    Value j0 = e.imul(e.idiv(t, e.c(s.S)), e.c(s.S));
    Value len = e.iadd(e.isub(t, j0), e.c(1));
    Value ds = allocWorkgroup(b, loc, s.S, b.getF32Type());
    Value scratch = reduceScratch(b, loc);
    Value partial = stridedFold(
        b, loc, a.lane, e.c(s.HD), e.f(0),
        [&](OpBuilder &b, Location loc, Value d, Value acc) {
          TLC_E(b, loc);
          Value at = e.iadd(qBase, d);
          return e.fma(e.ld(dout, {t, at}), e.ld(o, {t, at}), acc);
        });
    Value Di = workgroupReduce(b, loc, scratch, a.lane, partial, addF);
    Value l = e.ld(lse, {t, h});
    forLanes(b, loc, a.lane, len, [&](OpBuilder &b, Value j) {
      TLC_E(b, loc);
      Value key = e.iadd(j0, j);
      Value p = e.exp(e.sub(
          e.mul(dotRows(b, loc, q, t, qBase, kb, key, kBase, s.HD),
                e.f(s.scale)),
          l));
      Value dp = dotRows(b, loc, dout, t, qBase, vb, key, kBase, s.HD);
      e.st(e.mul(p, e.sub(dp, Di)), ds, j);
    });
    mlir::gpu::BarrierOp::create(b, loc);
    forLanes(b, loc, a.lane, s.HD, [&](OpBuilder &b, Value d) {
      TLC_E(b, loc);
      Value col = e.iadd(kBase, d);
      Value acc = foldRange(
          b, loc, e.c(0), len, e.f(0),
          [&](OpBuilder &b, Location loc, Value j, Value acc) {
            TLC_E(b, loc);
            return e.fma(e.ld(ds, j), e.ld(kb, {e.iadd(j0, j), col}), acc);
          });
      e.st(e.mul(acc, e.f(s.scale)), dq, {t, e.iadd(qBase, d)});
    });
  };
  return k;
}

/// Backward, key side: workgroup (key j, kv head g); for each query head h
/// of the group and query i in [j, end of j's sequence): p and ds as the
/// query side computes them, then dk_j = scale sum ds q_i and
/// dv_j = sum p dout_i (h, then i, ascending).
KernelSpec causalAttentionGradKVKernel(const AttentionShape &s, int64_t tm,
                                       MLIRContext *ctx) {
  Type f32 = f32Of(ctx);
  Type qRows = rowsOf(tm, s.DQ(), f32), kvRows = rowsOf(tm, s.DKV(), f32);
  KernelSpec k;
  k.name = "causal_attention_grad_kv_" + s.key();
  k.buffers = {qRows, kvRows, kvRows, qRows, rowsOf(tm, s.H, f32), qRows,
               kvRows, kvRows};
  k.tokensFactor = s.KVH;
  int64_t G = s.H / s.KVH;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value q = a.buffers[0], kb = a.buffers[1], vb = a.buffers[2],
          o = a.buffers[3], lse = a.buffers[4], dout = a.buffers[5],
          dk = a.buffers[6], dv = a.buffers[7];
    Value j = e.idiv(a.unit, e.c(s.KVH)), g = e.irem(a.unit, e.c(s.KVH));
    Value kBase = e.imul(g, e.c(s.HD));
    Value end = e.imul(e.iadd(e.idiv(j, e.c(s.S)), e.c(1)), e.c(s.S));
    Value count = e.isub(end, j);
    Value p = allocWorkgroup(b, loc, s.S, b.getF32Type());
    Value ds = allocWorkgroup(b, loc, s.S, b.getF32Type());
    forLanes(b, loc, a.lane, s.HD, [&](OpBuilder &b, Value d) {
      TLC_E(b, loc);
      e.st(e.f(0), dk, {j, e.iadd(kBase, d)});
      e.st(e.f(0), dv, {j, e.iadd(kBase, d)});
    });
    scf::ForOp::create(
        b, loc, e.c(0), e.c(G), e.c(1), ValueRange{},
        [&](OpBuilder &b, Location loc, Value hh, ValueRange) {
          TLC_E(b, loc);
          Value h = e.iadd(e.imul(g, e.c(G)), hh);
          Value qBase = e.imul(h, e.c(s.HD));
          forLanes(b, loc, a.lane, count, [&](OpBuilder &b, Value i) {
            TLC_E(b, loc);
            Value ti = e.iadd(j, i);
            Value pi = e.exp(e.sub(
                e.mul(dotRows(b, loc, q, ti, qBase, kb, j, kBase, s.HD),
                      e.f(s.scale)),
                e.ld(lse, {ti, h})));
            Value Di = dotRows(b, loc, dout, ti, qBase, o, ti, qBase, s.HD);
            Value dp = dotRows(b, loc, dout, ti, qBase, vb, j, kBase, s.HD);
            e.st(pi, p, i);
            e.st(e.mul(pi, e.sub(dp, Di)), ds, i);
          });
          mlir::gpu::BarrierOp::create(b, loc);
          forLanes(b, loc, a.lane, s.HD, [&](OpBuilder &b, Value d) {
            TLC_E(b, loc);
            Value col = e.iadd(qBase, d), out = e.iadd(kBase, d);
            auto over = [&](Value weights, Value rows) {
              return foldRange(
                  b, loc, e.c(0), count, e.f(0),
                  [&](OpBuilder &b, Location loc, Value i, Value acc) {
                    TLC_E(b, loc);
                    return e.fma(e.ld(weights, i), e.ld(rows, {e.iadd(j, i), col}), acc);
                  });
            };
            e.st(e.add(e.ld(dk, {j, out}), e.mul(over(ds, q), e.f(s.scale))),
                 dk, {j, out});
            e.st(e.add(e.ld(dv, {j, out}), over(p, dout)), dv, {j, out});
          });
          mlir::gpu::BarrierOp::create(b, loc);
          scf::YieldOp::create(b, loc);
        });
  };
  return k;
}

/// Cross entropy fused with the LM head, one token per workgroup: each
/// invocation runs an online max / sum of exp over its strided rows v of
/// z_v = x[t] . w[v] (k ascending) and catches the label's logit; the
/// workgroup combines them in lane order. Ignored tokens: loss = lse = 0.
KernelSpec crossEntropyKernel(CrossEntropyOp op, int64_t tm,
                              int64_t maxBinding) {
  auto wt = cast<ShapedType>(op.getWeight().getType());
  int64_t V = wt.getDimSize(0), K = wt.getDimSize(1);
  Type et = wt.getElementType();
  MLIRContext *ctx = op.getContext();
  KernelSpec k;
  k.name = llvm::formatv("cross_entropy_v{0}_k{1}_{2}", V, K, suffixOf(et));
  k.buffers = {rowsOf(tm, K, f32Of(ctx))};
  RowChunks chunks = rowChunks(wt, maxBinding);
  addWeightChunks(k, 1, wt, chunks);
  k.buffers.append({flatOf(tm, i32Of(ctx)), flatOf(tm, f32Of(ctx)),
                    flatOf(tm, f32Of(ctx))});
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    int64_t c = chunks.count();
    ValueRange w = a.buffers.slice(1, c);
    Value x = a.buffers[0], labels = a.buffers[1 + c],
          loss = a.buffers[2 + c], lse = a.buffers[3 + c];
    Value scratch = reduceScratch(b, loc);
    Value label = e.ld(labels, a.unit);
    Value labelAt = arith::IndexCastOp::create(b, loc, b.getIndexType(), label);
    Value ninf = e.f(-std::numeric_limits<float>::infinity());
    Value first = e.ieq(a.lane, e.c(0));
    scf::IfOp::create(
        b, loc, e.valid(label),
        [&](OpBuilder &b, Location loc) {
          TLC_E(b, loc);
          // Per invocation (m, s, z_label) over v = lane, lane + 64, ...
          Value inits[] = {ninf, e.f(0), e.f(0)};
          auto some = scf::IfOp::create(
              b, loc, e.ult(a.lane, e.c(V)),
              [&](OpBuilder &b, Location loc) {
                TLC_E(b, loc);
                auto loop = scf::ForOp::create(
                    b, loc, a.lane, e.c(V), e.c(kWorkgroupSize),
                    ValueRange(inits),
                    [&](OpBuilder &b, Location loc, Value v, ValueRange acc) {
                      TLC_E(b, loc);
                      Value z = foldRange(
                          b, loc, e.c(0), e.c(K), e.f(0),
                          [&](OpBuilder &b, Location loc, Value kk, Value s) {
                            TLC_E(b, loc);
                            return e.add(
                                s, e.mul(e.ld(x, {a.unit, kk}),
                                         loadWeightAt(b, loc, w, chunks, et,
                                                      v, kk)));
                          });
                      Value m = e.max(acc[0], z);
                      Value kept = e.sel(e.feq(acc[0], ninf), e.f(0),
                                         e.mul(acc[1], e.exp(e.sub(acc[0], m))));
                      Value sum = e.add(kept, e.exp(e.sub(z, m)));
                      Value zl = e.sel(e.ieq(v, labelAt), z, acc[2]);
                      scf::YieldOp::create(b, loc, ValueRange{m, sum, zl});
                    });
                scf::YieldOp::create(b, loc, loop.getResults());
              },
              [&](OpBuilder &b, Location loc) {
                scf::YieldOp::create(b, loc, ValueRange(inits));
              });
          Value m = workgroupReduce(b, loc, scratch, a.lane, some.getResult(0),
                                    maxF);
          Value mine = e.sel(e.feq(some.getResult(0), ninf), e.f(0),
                             e.mul(some.getResult(1),
                                   e.exp(e.sub(some.getResult(0), m))));
          Value sum = workgroupReduce(b, loc, scratch, a.lane, mine, addF);
          Value zl = workgroupReduce(b, loc, scratch, a.lane, some.getResult(2),
                                     addF);
          when(b, loc, first, [&](OpBuilder &b, Location loc) {
            TLC_E(b, loc);
            Value l = e.add(m, e.log(sum));
            e.st(l, lse, a.unit);
            e.st(e.sub(l, zl), loss, a.unit);
          });
          scf::YieldOp::create(b, loc);
        },
        [&](OpBuilder &b, Location loc) {
          when(b, loc, first, [&](OpBuilder &b, Location loc) {
            TLC_E(b, loc);
            e.st(e.f(0), lse, a.unit);
            e.st(e.f(0), loss, a.unit);
          });
          scf::YieldOp::create(b, loc);
        });
  };
  return k;
}

/// Its backward, one token per workgroup: dx[t] = dloss[t] sum_v
/// (exp(z_v - lse[t]) - [v == label]) w[v], 64 rows v at a time (their
/// factors in workgroup memory, then each invocation its columns k, v
/// ascending); 0 for ignored tokens.
KernelSpec crossEntropyGradKernel(CrossEntropyGradOp op, int64_t tm,
                                  int64_t maxBinding) {
  auto wt = cast<ShapedType>(op.getWeight().getType());
  int64_t V = wt.getDimSize(0), K = wt.getDimSize(1);
  Type et = wt.getElementType();
  MLIRContext *ctx = op.getContext();
  KernelSpec k;
  k.name = llvm::formatv("cross_entropy_grad_v{0}_k{1}_{2}", V, K,
                         suffixOf(et));
  k.buffers = {rowsOf(tm, K, f32Of(ctx))};
  RowChunks wchunks = rowChunks(wt, maxBinding);
  addWeightChunks(k, 1, wt, wchunks);
  k.buffers.append({flatOf(tm, i32Of(ctx)), flatOf(tm, f32Of(ctx)),
                    flatOf(tm, f32Of(ctx)), rowsOf(tm, K, f32Of(ctx))});
  int64_t chunks = (V + kWorkgroupSize - 1) / kWorkgroupSize;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    int64_t c = wchunks.count();
    ValueRange w = a.buffers.slice(1, c);
    Value x = a.buffers[0], labels = a.buffers[1 + c], lse = a.buffers[2 + c],
          dloss = a.buffers[3 + c], dx = a.buffers[4 + c];
    Value factors = allocWorkgroup(b, loc, kWorkgroupSize, b.getF32Type());
    Value label = e.ld(labels, a.unit);
    Value labelAt = arith::IndexCastOp::create(b, loc, b.getIndexType(), label);
    forLanes(b, loc, a.lane, K, [&](OpBuilder &b, Value kk) {
      TLC_E(b, loc);
      e.st(e.f(0), dx, {a.unit, kk});
    });
    when(b, loc, e.valid(label), [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      Value l = e.ld(lse, a.unit), c = e.ld(dloss, a.unit);
      scf::ForOp::create(
          b, loc, e.c(0), e.c(chunks), e.c(1), ValueRange{},
          [&](OpBuilder &b, Location loc, Value chunk, ValueRange) {
            TLC_E(b, loc);
            Value v0 = e.imul(chunk, e.c(kWorkgroupSize));
            Value v = e.iadd(v0, a.lane);
            auto factor = scf::IfOp::create(
                b, loc, e.ult(v, e.c(V)),
                [&](OpBuilder &b, Location loc) {
                  TLC_E(b, loc);
                  Value z = foldRange(
                      b, loc, e.c(0), e.c(K), e.f(0),
                      [&](OpBuilder &b, Location loc, Value kk, Value s) {
                        TLC_E(b, loc);
                        return e.add(s, e.mul(e.ld(x, {a.unit, kk}),
                                              loadWeightAt(b, loc, w, wchunks,
                                                           et, v, kk)));
                      });
                  Value p = e.sub(e.exp(e.sub(z, l)),
                                  e.sel(e.ieq(v, labelAt), e.f(1), e.f(0)));
                  scf::YieldOp::create(b, loc, e.mul(p, c));
                },
                [&](OpBuilder &b, Location loc) {
                  scf::YieldOp::create(b, loc, f32Const(b, loc, 0));
                });
            e.st(factor.getResult(0), factors, a.lane);
            mlir::gpu::BarrierOp::create(b, loc);
            Value rows = arith::MinUIOp::create(b, loc, e.c(kWorkgroupSize),
                                                e.isub(e.c(V), v0));
            forLanes(b, loc, a.lane, K, [&](OpBuilder &b, Value kk) {
              TLC_E(b, loc);
              Value acc = foldRange(
                  b, loc, e.c(0), rows, e.ld(dx, {a.unit, kk}),
                  [&](OpBuilder &b, Location loc, Value jj, Value acc) {
                    TLC_E(b, loc);
                    Value vv = e.iadd(v0, jj);
                    return e.add(acc,
                                 e.mul(e.ld(factors, jj),
                                       loadWeightAt(b, loc, w, wchunks, et,
                                                    vv, kk)));
                  });
              e.st(acc, dx, {a.unit, kk});
            });
            mlir::gpu::BarrierOp::create(b, loc);
            scf::YieldOp::create(b, loc);
          });
    });
  };
  return k;
}

/// Online softmax statistics: (m, s) folded with (mi, si) as the maximum
/// and the sum of exp(z - maximum); an empty part has mi = -inf.
std::pair<Value, Value> combineMaxSum(E &e, Value m, Value s, Value mi,
                                      Value si) {
  Value ninf = e.f(-std::numeric_limits<float>::infinity());
  Value mm = e.max(m, mi);
  auto scaled = [&](Value mx, Value sx) {
    return e.sel(e.feq(mx, ninf), e.f(0), e.mul(sx, e.exp(e.sub(mx, mm))));
  };
  return {mm, e.add(scaled(m, s), scaled(mi, si))};
}

/// Stages the logits' operands for tiledProduct: aTile = x rows (tokens
/// from row0), bTile = W rows v0 + col0 + j (clamped below `rows`).
void fillLogitOperands(OpBuilder &b, Location loc, const KernelArgs &a,
                       Value kb, Value aTile, Value bTile, Value x,
                       ValueRange w, const RowChunks &chunks, Type et,
                       int64_t tm, Value row0, Value col0, int64_t v0,
                       int64_t rows) {
  TLC_E(b, loc);
  Value kk = e.irem(a.lane, e.c(16));
  Value k = e.iadd(e.imul(kb, e.c(16)), kk);
  for (int64_t r = 0; r < 16; ++r) {
    Value i = e.iadd(e.c(r * 4), e.idiv(a.lane, e.c(16)));
    Value t = arith::MinUIOp::create(b, loc, e.iadd(row0, i), e.c(tm - 1));
    e.st(e.ld(x, {t, k}), aTile, e.iadd(e.imul(kk, e.c(kTile)), i));
    Value v = e.iadd(e.c(v0), arith::MinUIOp::create(b, loc, e.iadd(col0, i),
                                                      e.c(rows - 1)));
    e.st(loadWeightAt(b, loc, w, chunks, et, v, k), bTile,
         e.iadd(e.imul(kk, e.c(kTile)), i));
  }
}

/// Cross entropy fused with the LM head for 16+ tokens, tiled, in two
/// kernels. This one: a workgroup per 64 tokens x 64 rows v of the logits
/// z = x W^T (tiledProduct); per token, the tile's (max, sum of exp) go to
/// partials[t, 2 tile .. 2 tile + 1] (8 per token and invocation, then 8
/// invocations in order) and the label's logit to zl[t].
KernelSpec crossEntropyPartialsKernel(CrossEntropyOp op, int64_t tm,
                                      int64_t maxBinding) {
  auto wt = cast<ShapedType>(op.getWeight().getType());
  int64_t V = wt.getDimSize(0), K = wt.getDimSize(1);
  Type et = wt.getElementType();
  MLIRContext *ctx = op.getContext();
  int64_t colTiles = (V + kTile - 1) / kTile;
  KernelSpec k;
  k.name = llvm::formatv("cross_entropy_partials_v{0}_k{1}_{2}", V, K,
                         suffixOf(et));
  k.buffers = {rowsOf(tm, K, f32Of(ctx))};
  RowChunks chunks = rowChunks(wt, maxBinding);
  addWeightChunks(k, 1, wt, chunks);
  k.buffers.append({flatOf(tm, i32Of(ctx)), rowsOf(tm, 2 * colTiles, f32Of(ctx)),
                    flatOf(tm, f32Of(ctx))});
  tileWorkload(k, tm, V);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    int64_t c = chunks.count();
    ValueRange w = a.buffers.slice(1, c);
    Value x = a.buffers[0], labels = a.buffers[1 + c],
          partials = a.buffers[2 + c], zl = a.buffers[3 + c];
    Value ms = allocWorkgroup(b, loc, kTile * kMicro, b.getF32Type());
    Value ss = allocWorkgroup(b, loc, kTile * kMicro, b.getF32Type());
    Value ninf = e.f(-std::numeric_limits<float>::infinity());
    forOutputTile(b, loc, a, V, [&](OpBuilder &b, Location loc, Value row0,
                                     Value col0) {
      TLC_E(b, loc);
      Value tile = e.idiv(col0, e.c(kTile));
      TileResult r = tiledProduct(
          b, loc, a.lane, K / 16,
          [&](OpBuilder &b, Location loc, Value kb, Value aTile, Value bTile) {
            fillLogitOperands(b, loc, a, kb, aTile, bTile, x, w, chunks, et,
                              tm, row0, col0, 0, V);
          });
      for (int64_t i = 0; i < kMicro; ++i) {
        Value ti = r.row(b, loc, i), t = e.iadd(row0, ti);
        Value label = e.ld(labels, Value(arith::MinUIOp::create(b, loc, t, e.c(tm - 1))));
        Value labelAt = arith::IndexCastOp::create(b, loc, b.getIndexType(), label);
        Value m = ninf, sum = e.f(0);
        SmallVector<Value> vs, valid;
        for (int64_t j = 0; j < kMicro; ++j) {
          vs.push_back(e.iadd(col0, r.col(b, loc, j)));
          valid.push_back(e.ult(vs[j], e.c(V)));
          m = e.max(m, e.sel(valid[j], r.acc[i * kMicro + j], ninf));
        }
        for (int64_t j = 0; j < kMicro; ++j) {
          sum = e.add(sum, e.sel(valid[j],
                                 e.exp(e.sub(r.acc[i * kMicro + j], m)), e.f(0)));
          Value mine = arith::AndIOp::create(
              b, loc, arith::AndIOp::create(b, loc, e.ult(t, a.T), e.valid(label)),
              e.ieq(vs[j], labelAt));
          when(b, loc, mine, [&](OpBuilder &b, Location loc) {
            TLC_E(b, loc);
            e.st(r.acc[i * kMicro + j], zl, t);
          });
        }
        Value slot = e.iadd(e.imul(ti, e.c(kMicro)), r.tx);
        e.st(m, ms, slot);
        e.st(sum, ss, slot);
      }
      mlir::gpu::BarrierOp::create(b, loc);
      Value t = e.iadd(row0, a.lane);
      when(b, loc, e.ult(t, a.T), [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        Value base = e.imul(a.lane, e.c(kMicro));
        Value m = e.ld(ms, base), sum = e.ld(ss, base);
        for (int64_t j = 1; j < kMicro; ++j) {
          Value at = e.iadd(base, e.c(j));
          std::tie(m, sum) = combineMaxSum(e, m, sum, e.ld(ms, at), e.ld(ss, at));
        }
        Value col = e.imul(tile, e.c(2));
        e.st(m, partials, {t, col});
        e.st(sum, partials, {t, e.iadd(col, e.c(1))});
      });
    });
  };
  return k;
}

/// Then, one invocation per token: the tiles' partials in order give
/// lse[t] and loss[t] = lse[t] - zl[t]; ignored tokens: loss = lse = 0.
KernelSpec crossEntropyCombineKernel(int64_t V, int64_t tm, MLIRContext *ctx) {
  int64_t colTiles = (V + kTile - 1) / kTile;
  KernelSpec k;
  k.name = llvm::formatv("cross_entropy_combine_v{0}", V);
  k.buffers = {rowsOf(tm, 2 * colTiles, f32Of(ctx)), flatOf(tm, f32Of(ctx)),
               flatOf(tm, i32Of(ctx)), flatOf(tm, f32Of(ctx)),
               flatOf(tm, f32Of(ctx))};
  k.tokensFactor = 0;
  k.constant = (tm + kWorkgroupSize - 1) / kWorkgroupSize;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value partials = a.buffers[0], zl = a.buffers[1], labels = a.buffers[2],
          loss = a.buffers[3], lse = a.buffers[4];
    Value t = e.iadd(e.imul(a.unit, e.c(kWorkgroupSize)), a.lane);
    when(b, loc, e.ult(t, a.T), [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      auto valid = scf::IfOp::create(
          b, loc, e.valid(e.ld(labels, t)),
          [&](OpBuilder &b, Location loc) {
            TLC_E(b, loc);
            Value m = e.ld(partials, {t, e.c(0)}), s = e.ld(partials, {t, e.c(1)});
            if (colTiles > 1) {
              auto fold = scf::ForOp::create(
                  b, loc, e.c(1), e.c(colTiles), e.c(1), ValueRange{m, s},
                  [&](OpBuilder &b, Location loc, Value tile, ValueRange acc) {
                    TLC_E(b, loc);
                    Value col = e.imul(tile, e.c(2));
                    auto [mm, ss] = combineMaxSum(
                        e, acc[0], acc[1], e.ld(partials, {t, col}),
                        e.ld(partials, {t, e.iadd(col, e.c(1))}));
                    scf::YieldOp::create(b, loc, ValueRange{mm, ss});
                  });
              m = fold.getResult(0);
              s = fold.getResult(1);
            }
            Value l = e.add(m, e.log(s));
            scf::YieldOp::create(b, loc, ValueRange{l, e.sub(l, e.ld(zl, t))});
          },
          [&](OpBuilder &b, Location loc) {
            TLC_E(b, loc);
            scf::YieldOp::create(b, loc, ValueRange{e.f(0), e.f(0)});
          });
      e.st(valid.getResult(0), lse, t);
      e.st(valid.getResult(1), loss, t);
    });
  };
  return k;
}

/// Its backward for 16+ tokens, over slabs of `rows` vocabulary rows from
/// v0: P[t, v - v0] = dloss[t] (exp(z_v - lse[t]) - [v == label]) (tiled
/// logits; 0 for ignored tokens), then crossEntropyDxKernel.
KernelSpec crossEntropyProbsKernel(CrossEntropyGradOp op, int64_t tm,
                                   int64_t maxBinding, int64_t v0,
                                   int64_t rows, int64_t slab) {
  auto wt = cast<ShapedType>(op.getWeight().getType());
  int64_t V = wt.getDimSize(0), K = wt.getDimSize(1);
  Type et = wt.getElementType();
  MLIRContext *ctx = op.getContext();
  KernelSpec k;
  k.name = llvm::formatv("cross_entropy_probs_v{0}_k{1}_{2}_from{3}_n{4}", V,
                         K, suffixOf(et), v0, rows);
  k.buffers = {rowsOf(tm, K, f32Of(ctx))};
  RowChunks chunks = rowChunks(wt, maxBinding);
  addWeightChunks(k, 1, wt, chunks);
  k.buffers.append({flatOf(tm, i32Of(ctx)), flatOf(tm, f32Of(ctx)),
                    flatOf(tm, f32Of(ctx)), rowsOf(tm, slab, f32Of(ctx))});
  tileWorkload(k, tm, rows);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    int64_t c = chunks.count();
    ValueRange w = a.buffers.slice(1, c);
    Value x = a.buffers[0], labels = a.buffers[1 + c], lse = a.buffers[2 + c],
          dloss = a.buffers[3 + c], probs = a.buffers[4 + c];
    forOutputTile(b, loc, a, rows, [&](OpBuilder &b, Location loc, Value row0,
                                     Value col0) {
      TLC_E(b, loc);
      TileResult r = tiledProduct(
          b, loc, a.lane, K / 16,
          [&](OpBuilder &b, Location loc, Value kb, Value aTile, Value bTile) {
            fillLogitOperands(b, loc, a, kb, aTile, bTile, x, w, chunks, et,
                              tm, row0, col0, v0, rows);
          });
      for (int64_t i = 0; i < kMicro; ++i) {
        Value t = e.iadd(row0, r.row(b, loc, i));
        when(b, loc, e.ult(t, a.T), [&](OpBuilder &b, Location loc) {
          TLC_E(b, loc);
          Value label = e.ld(labels, t);
          Value labelAt =
              arith::IndexCastOp::create(b, loc, b.getIndexType(), label);
          Value l = e.ld(lse, t), scale = e.ld(dloss, t), ok = e.valid(label);
          for (int64_t j = 0; j < kMicro; ++j) {
            Value col = e.iadd(col0, r.col(b, loc, j));
            when(b, loc, e.ult(col, e.c(rows)), [&](OpBuilder &b, Location loc) {
              TLC_E(b, loc);
              Value p = e.sub(e.exp(e.sub(r.acc[i * kMicro + j], l)),
                              e.sel(e.ieq(e.iadd(col, e.c(v0)), labelAt),
                                    e.f(1), e.f(0)));
              e.st(e.sel(ok, e.mul(p, scale), e.f(0)), probs, {t, col});
            });
          }
        });
      }
    });
  };
  return k;
}

/// dx[t] (= or +=) sum over the slab's rows v of P[t, v - v0] W[v]: tiles
/// of 64 tokens x 64 columns k, v ascending.
KernelSpec crossEntropyDxKernel(CrossEntropyGradOp op, int64_t tm,
                                int64_t maxBinding, int64_t v0, int64_t rows,
                                int64_t slab, bool accumulate) {
  auto wt = cast<ShapedType>(op.getWeight().getType());
  int64_t V = wt.getDimSize(0), K = wt.getDimSize(1);
  Type et = wt.getElementType();
  MLIRContext *ctx = op.getContext();
  KernelSpec k;
  k.name = llvm::formatv("cross_entropy_dx_v{0}_k{1}_{2}_from{3}_n{4}{5}", V,
                         K, suffixOf(et), v0, rows, accumulate ? "_add" : "");
  k.buffers = {rowsOf(tm, slab, f32Of(ctx))};
  RowChunks chunks = rowChunks(wt, maxBinding);
  addWeightChunks(k, 1, wt, chunks);
  k.buffers.push_back(rowsOf(tm, K, f32Of(ctx)));
  tileWorkload(k, tm, K);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    int64_t c = chunks.count();
    ValueRange w = a.buffers.slice(1, c);
    Value probs = a.buffers[0], dx = a.buffers[1 + c];
    forOutputTile(b, loc, a, K, [&](OpBuilder &b, Location loc, Value row0,
                                     Value col0) {
      TLC_E(b, loc);
      auto fill = [&](OpBuilder &b, Location loc, Value kb, Value aTile,
                      Value bTile) {
        TLC_E(b, loc);
        Value vv = e.irem(a.lane, e.c(16));
        Value vi = e.iadd(e.imul(kb, e.c(16)), vv);
        Value inside = e.ult(vi, e.c(rows));
        Value viAt = arith::MinUIOp::create(b, loc, vi, e.c(rows - 1));
        Value col = arith::MinUIOp::create(b, loc, e.iadd(col0, a.lane),
                                           e.c(K - 1));
        for (int64_t r = 0; r < 16; ++r) {
          Value i = e.iadd(e.c(r * 4), e.idiv(a.lane, e.c(16)));
          Value t = arith::MinUIOp::create(b, loc, e.iadd(row0, i), e.c(tm - 1));
          e.st(e.sel(inside, e.ld(probs, {t, viAt}), e.f(0)), aTile,
               e.iadd(e.imul(vv, e.c(kTile)), i));
          Value v = e.iadd(e.c(v0),
                           arith::MinUIOp::create(
                               b, loc, e.iadd(e.imul(kb, e.c(16)), e.c(r)),
                               e.c(rows - 1)));
          e.st(loadWeightAt(b, loc, w, chunks, et, v, col), bTile,
               e.iadd(e.c(r * kTile), a.lane));
        }
      };
      TileResult r = tiledProduct(b, loc, a.lane, (rows + 15) / 16, fill);
      for (int64_t i = 0; i < kMicro; ++i) {
        Value t = e.iadd(row0, r.row(b, loc, i));
        for (int64_t j = 0; j < kMicro; ++j) {
          Value col = e.iadd(col0, r.col(b, loc, j));
          when(b, loc,
               arith::AndIOp::create(b, loc, e.ult(t, a.T), e.ult(col, e.c(K))),
               [&](OpBuilder &b, Location loc) {
                 TLC_E(b, loc);
                 Value v = r.acc[i * kMicro + j];
                 e.st(accumulate ? e.add(e.ld(dx, {t, col}), v) : v, dx,
                      {t, col});
               });
        }
      }
    });
  };
  return k;
}

/// Per-token labels' count and (optionally) loss sum over t < T, reduced.
Value validCount(OpBuilder &b, Location loc, const KernelArgs &a,
                 Value scratch, Value labels) {
  TLC_E(b, loc);
  Value part = stridedFold(b, loc, a.lane, a.T, e.f(0),
                           [&](OpBuilder &b, Location loc, Value t, Value acc) {
                             TLC_E(b, loc);
                             return e.add(acc, e.sel(e.valid(e.ld(labels, t)),
                                                     e.f(1), e.f(0)));
                           });
  return workgroupReduce(b, loc, scratch, a.lane, part, addF);
}

/// out[0] = mean of loss[t] over valid t < T, or 0; one workgroup.
KernelSpec meanLossKernel(int64_t tm, MLIRContext *ctx) {
  KernelSpec k;
  k.name = "mean_loss";
  k.buffers = {flatOf(tm, f32Of(ctx)), flatOf(tm, i32Of(ctx)),
               flatOf(1, f32Of(ctx))};
  k.tokensFactor = 0;
  k.constant = 1;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value loss = a.buffers[0], labels = a.buffers[1], out = a.buffers[2];
    Value scratch = reduceScratch(b, loc);
    Value part = stridedFold(
        b, loc, a.lane, a.T, e.f(0),
        [&](OpBuilder &b, Location loc, Value t, Value acc) {
          TLC_E(b, loc);
          return e.add(acc, e.sel(e.valid(e.ld(labels, t)), e.ld(loss, t),
                                  e.f(0)));
        });
    Value sum = workgroupReduce(b, loc, scratch, a.lane, part, addF);
    Value count = validCount(b, loc, a, scratch, labels);
    when(b, loc, e.ieq(a.lane, e.c(0)), [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      e.st(e.sel(e.fgt(count, e.f(0)), e.div(sum, count), e.f(0)), out,
           e.c(0));
    });
  };
  return k;
}

/// dloss[t] = seed[at] / count for valid t < T, else 0; one workgroup.
/// `seed` is a buffer of `seedWords` floats (the hyper block, when the
/// seed is its loss_scale field: views that start inside it would break
/// the device's binding alignment).
KernelSpec meanLossGradKernel(int64_t tm, int64_t seedWords, int64_t at,
                              MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("mean_loss_grad_seed{0}_{1}", seedWords, at);
  k.buffers = {flatOf(seedWords, f32Of(ctx)), flatOf(tm, i32Of(ctx)),
               flatOf(tm, f32Of(ctx))};
  k.tokensFactor = 0;
  k.constant = 1;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    TLC_E(b, loc);
    Value seed = a.buffers[0], labels = a.buffers[1], dloss = a.buffers[2];
    Value count = validCount(b, loc, a, reduceScratch(b, loc), labels);
    Value c = e.sel(e.fgt(count, e.f(0)), e.div(e.ld(seed, e.c(at)), count),
                    e.f(0));
    forLanes(b, loc, a.lane, a.T, [&](OpBuilder &b, Value t) {
      TLC_E(b, loc);
      e.st(e.sel(e.valid(e.ld(labels, t)), c, e.f(0)), dloss, t);
    });
  };
  return k;
}

/// acc[i] += g[i] over n elements.
KernelSpec accumulateKernel(int64_t n, MLIRContext *ctx) {
  KernelSpec k;
  k.name = llvm::formatv("accumulate_n{0}", n);
  k.buffers = {flatOf(n, f32Of(ctx)), flatOf(n, f32Of(ctx))};
  k.tokensFactor = 0;
  k.constant = gridGroups(n);
  int64_t groups = k.constant;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    forGrid(b, loc, a, groups, n, [&](OpBuilder &b, Value i) {
      TLC_E(b, loc);
      e.st(e.add(e.ld(a.buffers[1], i), e.ld(a.buffers[0], i)), a.buffers[1],
           i);
    });
  };
  return k;
}

/// `fn` only when the hyper block's `apply` is set (uniform).
void whenApplying(OpBuilder &b, Location loc, Value hyper,
                  function_ref<void(OpBuilder &, Location)> fn) {
  TLC_E(b, loc);
  Value apply = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne,
                                      e.bitsAt(hyper, kApply),
                                      i32Const(b, loc, 0));
  when(b, loc, apply, fn);
}

/// Workgroups for the sum of squares of n gradients: blocks of about 64K.
int64_t gradSqGroups(int64_t n) {
  return std::clamp<int64_t>((n + 65535) / 65536, 1, 1024);
}

/// partials[g] = sum of squares of block g of the n gradients (blocks of
/// ceil(n / groups), ascending), when applying; a workgroup per block.
KernelSpec gradSqPartialsKernel(int64_t n, MLIRContext *ctx) {
  int64_t groups = gradSqGroups(n), block = (n + groups - 1) / groups;
  KernelSpec k;
  k.name = llvm::formatv("grad_sq_sum_p{0}_g{1}", n, groups);
  k.buffers = {flatOf(n, f32Of(ctx)), flatOf(kHyperWords, f32Of(ctx)),
               flatOf(groups, f32Of(ctx))};
  k.tokensFactor = 0;
  k.constant = groups;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value grads = a.buffers[0], hyper = a.buffers[1], partials = a.buffers[2];
    whenApplying(b, loc, hyper, [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      Value lo = e.imul(a.unit, e.c(block));
      Value count = e.isub(arith::MinUIOp::create(b, loc, e.iadd(lo, e.c(block)),
                                                  e.c(n)),
                           arith::MinUIOp::create(b, loc, lo, e.c(n)));
      Value part = stridedFold(
          b, loc, a.lane, count, e.f(0),
          [&](OpBuilder &b, Location loc, Value i, Value acc) {
            TLC_E(b, loc);
            Value g = e.ld(grads, e.iadd(lo, i));
            return e.fma(g, g, acc);
          });
      Value sum = workgroupReduce(b, loc, reduceScratch(b, loc), a.lane, part,
                                  addF);
      when(b, loc, e.ieq(a.lane, e.c(0)), [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        e.st(sum, partials, a.unit);
      });
    });
  };
  return k;
}

/// hyper.grad_norm = sqrt(sum of the partial sums, buffer by buffer and
/// in order within each), when applying; one invocation.
KernelSpec gradNormCombineKernel(ArrayRef<int64_t> sizes, MLIRContext *ctx) {
  KernelSpec k;
  int64_t total = 0;
  for (int64_t s : sizes) {
    k.buffers.push_back(flatOf(s, f32Of(ctx)));
    total += s;
  }
  k.name = llvm::formatv("grad_norm_of{0}_in{1}", total, sizes.size());
  k.buffers.push_back(flatOf(kHyperWords, f32Of(ctx)));
  k.tokensFactor = 0;
  k.constant = 1;
  SmallVector<int64_t> counts(sizes);
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value hyper = a.buffers[counts.size()];
    whenApplying(b, loc, hyper, [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      when(b, loc, e.ieq(a.lane, e.c(0)), [&](OpBuilder &b, Location loc) {
        TLC_E(b, loc);
        Value sum = e.f(0);
        for (size_t i = 0; i < counts.size(); ++i)
          sum = foldRange(b, loc, e.c(0), e.c(counts[i]), sum,
                          [&](OpBuilder &b, Location loc, Value j, Value acc) {
                            TLC_E(b, loc);
                            return e.add(acc, e.ld(a.buffers[i], j));
                          });
        e.st(e.sqrt(sum), hyper, e.c(kGradNorm));
      });
    });
  };
  return k;
}

/// torch.optim.AdamW or SGD over n adapter values, after clipping as
/// torch's clip_grad_norm_; the gradients are zeroed (train.c's formulas).
/// Buffers: parameters, gradients, (AdamW: first and second moments), the
/// hyper block: one range of each section of the training state.
KernelSpec optimizerKernel(StringRef kind, int64_t n, MLIRContext *ctx) {
  KernelSpec k;
  bool adamw = kind == "adamw";
  k.name = llvm::formatv("{0}_p{1}", kind, n);
  for (int i = 0; i < (adamw ? 4 : 2); ++i)
    k.buffers.push_back(flatOf(n, f32Of(ctx)));
  k.buffers.push_back(flatOf(kHyperWords, f32Of(ctx)));
  k.tokensFactor = 0;
  k.constant = gridGroups(n);
  int64_t groups = k.constant;
  k.body = [=](OpBuilder &b, Location loc, const KernelArgs &a) {
    Value params = a.buffers[0], grads = a.buffers[1];
    Value hyper = a.buffers.back();
    whenApplying(b, loc, hyper, [&](OpBuilder &b, Location loc) {
      TLC_E(b, loc);
      auto h = [&](int64_t field) { return e.ld(hyper, e.c(field)); };
      Value maxNorm = h(kMaxGradNorm);
      Value clip = e.sel(
          e.fgt(maxNorm, e.f(0)),
          e.min(e.div(maxNorm, e.add(h(kGradNorm), e.f(1e-6f))), e.f(1)),
          e.f(1));
      Value lr = h(kLr), wd = h(kWeightDecay);
      Value decay = e.sub(e.f(1), e.mul(lr, wd));
      Value beta2 = h(kBeta2), b1 = e.sub(e.f(1), h(kBeta1)),
            b2 = e.sub(e.f(1), beta2);
      Value bc2 = h(kBiasCorrection2Sqrt), eps = h(kEps), step = h(kStepSize);
      forGrid(b, loc, a, groups, n, [&](OpBuilder &b, Value i) {
        TLC_E(b, loc);
        Value p = e.ld(params, i), g = e.mul(e.ld(grads, i), clip);
        if (adamw) {
          Value moment1 = a.buffers[2], moment2 = a.buffers[3];
          Value m0 = e.ld(moment1, i);
          Value m = e.add(m0, e.mul(b1, e.sub(g, m0)));
          Value v =
              e.add(e.mul(e.ld(moment2, i), beta2), e.mul(e.mul(b2, g), g));
          Value denom = e.add(e.div(e.sqrt(v), bc2), eps);
          e.st(e.sub(e.mul(p, decay), e.mul(step, e.div(m, denom))), params, i);
          e.st(m, moment1, i);
          e.st(v, moment2, i);
        } else {
          Value gw = e.add(g, e.mul(wd, p));
          e.st(e.sub(p, e.mul(lr, gw)), params, i);
        }
        e.st(e.f(0), grads, i);
      });
    });
  };
  return k;
}

/// The f32 adapters LoRA training needs, or an error.
LogicalResult checkF32Adapters(Operation *op, Value a, Value b) {
  auto isF32 = [](Value v) {
    return cast<ShapedType>(v.getType()).getElementType().isF32();
  };
  if (isF32(a) && isF32(b))
    return success();
  return op->emitOpError("trains float32 adapters only");
}

LogicalResult checkHead(Operation *op, Value w) {
  Type et = cast<ShapedType>(w.getType()).getElementType();
  if (et.isF32() || et.isBF16())
    return success();
  return op->emitOpError("needs a bf16 or f32 LM head");
}

} // namespace

bool isTrainingOp(Operation *op) {
  return isa<RMSNormGradOp, TernaryMatmulTransposedOp, LoraGradOp,
             SquaredReluMulGradOp, CausalAttentionOp, CausalAttentionGradOp,
             CrossEntropyOp, CrossEntropyGradOp, MeanLossOp, MeanLossGradOp,
             AccumulateGradOp, OptimizerStepOp>(op);
}

LogicalResult formTrainingDispatches(Operation *op, int64_t tm,
                                     int64_t maxBinding,
                                     const Dispatcher &dispatch) {
  MLIRContext *ctx = op->getContext();
  OpBuilder b(op);
  Location loc = op->getLoc();
  auto replaceWith = [&](ValueRange values) {
    op->replaceAllUsesWith(values);
    op->erase();
    return success();
  };
  // One kernel on the op's operands and results.
  // (A null dispatch: an error was emitted.)
  auto single = [&](const KernelSpec &spec) {
    DispatchOp d = dispatch(b, spec, op->getOperands(), op->getResultTypes());
    return d ? replaceWith(d.getResults()) : failure();
  };
  auto shapeOf = [&](Value query, Value key, int64_t headDim, int64_t seqLen,
                     APFloat scale) {
    return AttentionShape{dim(query, 1) / headDim, dim(key, 1) / headDim,
                          headDim, seqLen, scale.convertToFloat()};
  };

  if (auto g = dyn_cast<RMSNormGradOp>(op))
    return single(rmsNormGradKernel(g, tm));
  if (auto m = dyn_cast<TernaryMatmulTransposedOp>(op)) {
    auto w = m.getWeight().getType();
    if (w.getInFeatures() % 16 != 0)
      return op->emitOpError("the GPU ternary kernel needs in_features % 16 "
                             "== 0, got ")
             << w.getInFeatures();
    int64_t N = w.getOutFeatures(), K = w.getInFeatures();
    return single(tm >= kTiledMinTokens && N % 16 == 0
                      ? ternaryMatmulTransposedTiledKernel(N, K, tm, ctx)
                      : ternaryMatmulTransposedKernel(N, K, tm, ctx));
  }
  if (auto l = dyn_cast<LoraGradOp>(op)) {
    if (failed(checkF32Adapters(op, l.getLoraA(), l.getLoraB())))
      return failure();
    int64_t R = dim(l.getLoraA(), 0), K = dim(l.getLoraA(), 1),
            N = dim(l.getLoraB(), 0);
    float scale = l.getScaling().convertToFloat();
    auto ud = RankedTensorType::get({ShapedType::kDynamic, 2 * R},
                                    b.getF32Type());
    auto rows = dispatch(b, loraGradRowsKernel(R, K, N, scale, tm, ctx),
                         {l.getInput(), l.getLoraA(), l.getLoraB(),
                          l.getResultGrad()},
                         {ud, l.getInputGrad().getType()});
    if (!rows)
      return failure();
    auto weights = dispatch(
        b, loraGradWeightsKernel(R, K, N, scale, tm, ctx),
        {l.getInput(), l.getResultGrad(), rows.getResult(0)},
        {l.getLoraAGrad().getType(), l.getLoraBGrad().getType()});
    if (!weights)
      return failure();
    return replaceWith({rows.getResult(1), weights.getResult(0),
                        weights.getResult(1)});
  }
  if (auto g = dyn_cast<SquaredReluMulGradOp>(op))
    return single(squaredReluMulGradKernel(dim(g.getGate(), 1), tm, ctx));
  if (auto a = dyn_cast<CausalAttentionOp>(op)) {
    AttentionShape s = shapeOf(a.getQuery(), a.getKey(), a.getHeadDim(),
                               a.getSeqLen(), a.getScale());
    if (failed(checkWorkgroupMemory(op, s.S, 2)))
      return failure();
    return single(causalAttentionKernel(s, tm, ctx));
  }
  if (auto a = dyn_cast<CausalAttentionGradOp>(op)) {
    AttentionShape s = shapeOf(a.getQuery(), a.getKey(), a.getHeadDim(),
                               a.getSeqLen(), a.getScale());
    if (failed(checkWorkgroupMemory(op, s.S, 2)))
      return failure();
    if (tm % s.S != 0)
      return op->emitOpError("tokens per step (")
             << tm << ") must be a multiple of seq_len " << s.S;
    auto dq = dispatch(b, causalAttentionGradQKernel(s, tm, ctx),
                       op->getOperands(), {a.getQueryGrad().getType()});
    auto dkv = dispatch(b, causalAttentionGradKVKernel(s, tm, ctx),
                        op->getOperands(),
                        {a.getKeyGrad().getType(), a.getValueGrad().getType()});
    if (!dq || !dkv)
      return failure();
    return replaceWith({dq.getResult(0), dkv.getResult(0), dkv.getResult(1)});
  }
  if (auto c = dyn_cast<CrossEntropyOp>(op)) {
    if (failed(checkHead(op, c.getWeight())))
      return failure();
    int64_t V = dim(c.getWeight(), 0), K = dim(c.getWeight(), 1);
    if (tm < kTiledMinTokens || K % 16 != 0 ||
        (tm + kTile - 1) / kTile * ((V + kTile - 1) / kTile) > 65535)
      return single(crossEntropyKernel(c, tm, maxBinding));
    auto partials = RankedTensorType::get(
        {ShapedType::kDynamic, 2 * ((V + kTile - 1) / kTile)}, b.getF32Type());
    auto perToken = RankedTensorType::get({ShapedType::kDynamic},
                                          b.getF32Type());
    auto part = dispatch(b, crossEntropyPartialsKernel(c, tm, maxBinding),
                         {c.getInput(), c.getWeight(), c.getLabels()},
                         {partials, perToken});
    if (!part)
      return failure();
    auto all = dispatch(b, crossEntropyCombineKernel(V, tm, ctx),
                        {part.getResult(0), part.getResult(1), c.getLabels()},
                        op->getResultTypes());
    return all ? replaceWith(all.getResults()) : failure();
  }
  if (auto c = dyn_cast<CrossEntropyGradOp>(op)) {
    if (failed(checkHead(op, c.getWeight())))
      return failure();
    // Slabs of vocabulary rows whose probabilities (tm x slab f32) take at
    // most 64 MiB and one binding.
    int64_t V = dim(c.getWeight(), 0), K = dim(c.getWeight(), 1);
    int64_t budget = int64_t(64) << 20;
    if (maxBinding > 0)
      budget = std::min(budget, maxBinding);
    int64_t slab = std::min(budget / (4 * tm) / kTile * kTile,
                            (V + kTile - 1) / kTile * kTile);
    if (tm < kTiledMinTokens || K % 16 != 0 || slab == 0)
      return single(crossEntropyGradKernel(c, tm, maxBinding));
    auto probsType = RankedTensorType::get({ShapedType::kDynamic, slab},
                                           b.getF32Type());
    Value dx;
    for (int64_t v0 = 0; v0 < V; v0 += slab) {
      int64_t rows = std::min(slab, V - v0);
      auto probs = dispatch(
          b, crossEntropyProbsKernel(c, tm, maxBinding, v0, rows, slab),
          {c.getInput(), c.getWeight(), c.getLabels(), c.getLse(),
           c.getLossGrad()},
          {probsType});
      if (!probs)
        return failure();
      if (!dx) {
        auto first = dispatch(
            b, crossEntropyDxKernel(c, tm, maxBinding, v0, rows, slab, false),
            {probs.getResult(0), c.getWeight()}, op->getResultTypes());
        if (!first)
          return failure();
        dx = first.getResult(0);
      } else if (!dispatch(b,
                           crossEntropyDxKernel(c, tm, maxBinding, v0, rows,
                                                slab, true),
                           {probs.getResult(0), c.getWeight(), dx}, {})) {
        return failure();
      }
    }
    return replaceWith(dx);
  }
  if (isa<MeanLossOp>(op))
    return single(meanLossKernel(tm, ctx));
  if (auto g = dyn_cast<MeanLossGradOp>(op)) {
    // The loss scale is a field of the hyper block: bind the whole block.
    auto scaleOp = g.getResultGrad().getDefiningOp<LossScaleOp>();
    Value seed = scaleOp ? scaleOp->getOperand(0) : g.getResultGrad();
    KernelSpec spec = scaleOp ? meanLossGradKernel(tm, kHyperWords,
                                                   kLossScale, ctx)
                              : meanLossGradKernel(tm, 1, 0, ctx);
    auto d = dispatch(b, spec, {seed, g.getLabels()}, op->getResultTypes());
    if (!d)
      return failure();
    (void)replaceWith(d.getResults());
    if (scaleOp && scaleOp->use_empty())
      scaleOp->erase();
    return success();
  }
  if (auto a = dyn_cast<AccumulateGradOp>(op)) {
    auto type = cast<RankedTensorType>(a.getGrad().getType());
    Value acc = TrainableOp::create(b, loc, type, a.getNameAttr(),
                                    b.getUnitAttr());
    if (!dispatch(b, accumulateKernel(type.getNumElements(), ctx),
                  {a.getGrad(), acc}, {}))
      return failure();
    return replaceWith({});
  }
  if (auto o = dyn_cast<OptimizerStepOp>(op)) {
    // The state's sections (parameters, gradients, AdamW's two moments) are
    // bound in ranges of at most maxBinding bytes, 256-byte aligned.
    int64_t total;
    trainStateLayout(op->getParentOfType<func::FuncOp>(), &total);
    StringRef kind = stringifyOptimizer(o.getKind());
    int sections = kind == "adamw" ? 4 : 2;
    int64_t range = total;
    if (maxBinding > 0 && 4 * total > maxBinding)
      range = maxBinding / 4 / 64 * 64;
    auto view = [&](int section, int64_t first, int64_t n) -> Value {
      return TrainStateOp::create(
          b, loc, RankedTensorType::get({n}, b.getF32Type()),
          section * total + first);
    };
    // The gradient norm: per range, partial sums over blocks (many
    // workgroups), then one ordered combination.
    SmallVector<Value> partials;
    SmallVector<int64_t> sizes;
    for (int64_t first = 0; first < total; first += range) {
      int64_t n = std::min(range, total - first);
      sizes.push_back(gradSqGroups(n));
      DispatchOp d = dispatch(
          b, gradSqPartialsKernel(n, ctx), {view(1, first, n), o.getHyper()},
          TypeRange{RankedTensorType::get({sizes.back()}, b.getF32Type())});
      if (!d)
        return failure();
      partials.push_back(d.getResult(0));
    }
    SmallVector<Value> operands(partials);
    operands.push_back(o.getHyper());
    if (!dispatch(b, gradNormCombineKernel(sizes, ctx), operands, {}))
      return failure();
    for (int64_t first = 0; first < total; first += range) {
      int64_t n = std::min(range, total - first);
      SmallVector<Value> operands;
      for (int s = 0; s < sections; ++s)
        operands.push_back(view(s, first, n));
      operands.push_back(o.getHyper());
      if (!dispatch(b, optimizerKernel(kind, n, ctx), operands, {}))
        return failure();
    }
    return replaceWith({});
  }
  return op->emitOpError("is not a training op");
}

} // namespace tlc::gpu
