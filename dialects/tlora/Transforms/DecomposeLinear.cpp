// tlora-decompose-linear: ternary_linear -> quantize + ternary_matmul.
#include "dialects/tlora/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::tlora {
#define GEN_PASS_DEF_DECOMPOSELINEARPASS
#include "dialects/tlora/Transforms/Passes.h.inc"
} // namespace mlir::tlora

using namespace mlir;
using namespace mlir::tlora;

namespace {
struct DecomposeTernaryLinear : OpRewritePattern<TernaryLinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TernaryLinearOp op,
                                PatternRewriter &rewriter) const override {
    Value q = QuantizeOp::create(rewriter, op.getLoc(), op.getInput());
    rewriter.replaceOpWithNewOp<TernaryMatmulOp>(op, op.getType(), q,
                                                 op.getWeight());
    return success();
  }
};

struct DecomposeLinearPass
    : mlir::tlora::impl::DecomposeLinearPassBase<DecomposeLinearPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<DecomposeTernaryLinear>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
