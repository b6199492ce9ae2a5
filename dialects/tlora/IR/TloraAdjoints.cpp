// Reverse-mode rules (DifferentiableOpInterface) of the tlora ops, and of
// arith.addf as an external model. Each rule builds the adjoints of the
// operands tlora-differentiate asks for; base weights are frozen.
#include "dialects/tlora/IR/TloraDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectRegistry.h"

using namespace mlir;
using namespace mlir::tlora;

#include "dialects/tlora/IR/TloraInterfaces.cpp.inc"

namespace {
/// Fails when a frozen operand (a weight, ids) would need a gradient.
LogicalResult checkFrozen(Operation *op, ArrayRef<bool> needed,
                          ArrayRef<unsigned> frozen) {
  for (unsigned i : frozen)
    if (i < needed.size() && needed[i])
      return op->emitOpError("operand ")
             << i << " is frozen (only adapters are trained)";
  return success();
}
/// The adjoints of an op whose grad op has one result per operand: the
/// results of the needed operands.
void takeNeeded(Operation *grad, ArrayRef<bool> needed,
                SmallVectorImpl<Value> &adj) {
  adj.assign(needed.size(), Value());
  for (auto [i, n] : llvm::enumerate(needed))
    if (n)
      adj[i] = grad->getResult(i);
}
} // namespace

LogicalResult EmbedOp::buildAdjoint(OpBuilder &, ArrayRef<Value>,
                                    ArrayRef<bool> needed,
                                    SmallVectorImpl<Value> &adj) {
  adj.assign(2, Value());
  return checkFrozen(*this, needed, {0, 1});
}

LogicalResult RMSNormOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                      ArrayRef<bool> needed,
                                      SmallVectorImpl<Value> &adj) {
  adj.assign(2, Value());
  if (failed(checkFrozen(*this, needed, {1})))
    return failure();
  if (needed[0])
    adj[0] = RMSNormGradOp::create(b, getLoc(), getInput(), getWeight(), dy[0],
                                   getEpsilonAttr());
  return success();
}

LogicalResult TernaryLinearOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                            ArrayRef<bool> needed,
                                            SmallVectorImpl<Value> &adj) {
  adj.assign(2, Value());
  if (failed(checkFrozen(*this, needed, {1})))
    return failure();
  // Straight-through estimator: d(x_q / s) / dx = 1.
  if (needed[0])
    adj[0] = TernaryMatmulTransposedOp::create(b, getLoc(), dy[0],
                                               getWeight());
  return success();
}

LogicalResult LoraOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                   ArrayRef<bool> needed,
                                   SmallVectorImpl<Value> &adj) {
  auto grad = LoraGradOp::create(
      b, getLoc(), getInput(), getLoraA(), getLoraB(), dy[0], getScalingAttr());
  takeNeeded(grad, needed, adj);
  return success();
}

LogicalResult SquaredReluMulOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                             ArrayRef<bool> needed,
                                             SmallVectorImpl<Value> &adj) {
  auto grad = SquaredReluMulGradOp::create(b, getLoc(), getGate(),
                                           getUp(), dy[0]);
  takeNeeded(grad, needed, adj);
  return success();
}

LogicalResult RopeOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                   ArrayRef<bool> needed,
                                   SmallVectorImpl<Value> &adj) {
  adj.assign(2, Value());
  if (!needed[0])
    return success();
  auto inv = RopeOp::create(b, getLoc(), dy[0], getPosition(),
                            getHeadDimAttr(), getThetaAttr(), getPeriodAttr(),
                            getInverse() ? UnitAttr() : b.getUnitAttr());
  adj[0] = inv;
  return success();
}

LogicalResult CausalAttentionOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                              ArrayRef<bool> needed,
                                              SmallVectorImpl<Value> &adj) {
  if (dy[1])
    return emitOpError("lse has no adjoint");
  auto grad = CausalAttentionGradOp::create(
      b, getLoc(), getQuery(), getKey(), getValue(), getResult(), getLse(), dy[0],
      getHeadDimAttr(), getSeqLenAttr(), getScaleAttr());
  takeNeeded(grad, needed, adj);
  return success();
}

LogicalResult CrossEntropyOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                           ArrayRef<bool> needed,
                                           SmallVectorImpl<Value> &adj) {
  adj.assign(3, Value());
  if (dy[1])
    return emitOpError("lse has no adjoint");
  if (failed(checkFrozen(*this, needed, {1, 2})))
    return failure();
  if (needed[0])
    adj[0] = CrossEntropyGradOp::create(b, getLoc(), getInput(), getWeight(), getLabels(),
                                        getLse(), dy[0]);
  return success();
}

LogicalResult MeanLossOp::buildAdjoint(OpBuilder &b, ArrayRef<Value> dy,
                                       ArrayRef<bool> needed,
                                       SmallVectorImpl<Value> &adj) {
  adj.assign(2, Value());
  if (needed[0])
    adj[0] = MeanLossGradOp::create(b, getLoc(), dy[0], getLabels());
  return success();
}

namespace {
/// d(a + b) = (dy, dy).
struct AddFAdjoint
    : DifferentiableOpInterface::ExternalModel<AddFAdjoint, arith::AddFOp> {
  LogicalResult buildAdjoint(Operation *, OpBuilder &, ArrayRef<Value> dy,
                             ArrayRef<bool> needed,
                             SmallVectorImpl<Value> &adj) const {
    adj.assign(2, Value());
    for (unsigned i = 0; i < 2; ++i)
      if (needed[i])
        adj[i] = dy[0];
    return success();
  }
};
} // namespace

void mlir::tlora::registerExternalModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, arith::ArithDialect *) {
    arith::AddFOp::attachInterface<AddFAdjoint>(*ctx);
  });
}
