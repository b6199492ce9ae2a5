// tlora-differentiate: reverse-mode differentiation of a training function
// with respect to its adapters, then gradient accumulation and the optimizer
// update. See Passes.td.
#include "dialects/tlora/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"

namespace mlir::tlora {
#define GEN_PASS_DEF_DIFFERENTIATEPASS
#include "dialects/tlora/Transforms/Passes.h.inc"
} // namespace mlir::tlora

using namespace mlir;
using namespace mlir::tlora;

SmallVector<StateTensor> mlir::tlora::trainStateLayout(func::FuncOp func,
                                                        int64_t *total) {
  SmallVector<StateTensor> out;
  llvm::StringSet<> seen;
  int64_t offset = 0;
  func.walk([&](TrainableOp op) {
    if (op.getGradient() || !seen.insert(op.getName()).second)
      return;
    auto t = op.getType();
    out.push_back({op.getName().str(),
                   SmallVector<int64_t>(t.getShape().begin(), t.getShape().end()),
                   offset});
    offset += llvm::alignTo(t.getNumElements(), 16); // 64-byte aligned
  });
  *total = offset;
  return out;
}

int64_t mlir::tlora::trainStateElements(int64_t total, StringRef optimizer) {
  return optimizer == "adamw" ? 4 * total : 2 * total;
}

namespace {
struct DifferentiatePass
    : mlir::tlora::impl::DifferentiatePassBase<DifferentiatePass> {
  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (auto kind = func->getAttrOfType<OptimizerAttr>(mlir::tlora::attr::kOptimizer))
        if (failed(differentiate(func, kind)))
          return signalPassFailure();
  }

  LogicalResult differentiate(func::FuncOp func, OptimizerAttr kind) {
    Block &body = func.getBody().front();
    Operation *ret = body.getTerminator();
    if (ret->getNumOperands() < 1)
      return func.emitOpError("a training function returns its loss");
    Value loss = ret->getOperand(0);

    // Activity: values that depend on an adapter.
    llvm::DenseSet<Value> varied;
    SmallVector<Operation *> forward;
    for (Operation &op : body) {
      if (&op == ret)
        break;
      forward.push_back(&op);
      bool v = isa<TrainableOp>(op);
      for (Value o : op.getOperands())
        v |= varied.contains(o);
      if (v)
        varied.insert(op.result_begin(), op.result_end());
    }
    if (!varied.contains(loss))
      return func.emitOpError("the loss does not depend on any adapter");

    OpBuilder b(ret);
    Location loc = func.getLoc();
    auto f32 = b.getF32Type();
    Value hyper =
        HyperOp::create(b, loc, RankedTensorType::get({16}, f32));
    Value seed =
        LossScaleOp::create(b, loc, hyper);
    llvm::DenseMap<Value, Value> adjoint;
    adjoint[loss] = seed;
    auto accumulate = [&](Value v, Value g) {
      Value &slot = adjoint[v];
      slot = slot ? arith::AddFOp::create(b, loc, slot, g).getResult() : g;
    };

    // Recomputation: before the backward of a layer, its forward ops are
    // cloned and the adjoint rules read the clones, so the forward values
    // of the layer die after their forward use; only each layer's input
    // (the residual stream) stays live.
    bool recompute = func->hasAttr(mlir::tlora::attr::kRecompute);
    llvm::DenseMap<Operation *, Operation *> clones;
    std::optional<int64_t> clonedLayer;
    auto layerOf = [](Operation *op) -> std::optional<int64_t> {
      if (auto l = op->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kLayer))
        return l.getInt();
      return std::nullopt;
    };
    auto cloneLayer = [&](int64_t layer) {
      IRMapping map;
      for (Operation *op : forward)
        if (layerOf(op) == layer && !isa<TrainableOp>(op)) {
          Operation *c = b.clone(*op, map);
          c->setAttr(mlir::tlora::attr::kRecomputed, b.getUnitAttr());
          clones[op] = c;
        }
    };

    for (Operation *op : llvm::reverse(forward)) {
      SmallVector<Value> dy;
      bool any = false;
      for (Value r : op->getResults()) {
        dy.push_back(adjoint.lookup(r));
        any |= (bool)dy.back();
      }
      if (!any || isa<TrainableOp>(op))
        continue;
      std::optional<int64_t> layer = layerOf(op);
      if (recompute && layer && layer != clonedLayer) {
        cloneLayer(*layer);
        clonedLayer = layer;
      }
      Operation *source = clones.lookup(op);
      auto rule = dyn_cast<DifferentiableOpInterface>(source ? source : op);
      if (!rule)
        return op->emitOpError("has no differentiation rule");
      SmallVector<bool> needed;
      for (Value o : op->getOperands())
        needed.push_back(varied.contains(o));
      SmallVector<Value> dx;
      if (failed(rule.buildAdjoint(b, dy, needed, dx)))
        return failure();
      for (auto [i, o] : llvm::enumerate(op->getOperands()))
        if (needed[i] && dx[i])
          accumulate(o, dx[i]);
    }

    bool anyGrad = false;
    for (Operation *op : forward)
      if (auto t = dyn_cast<TrainableOp>(op))
        if (Value g = adjoint.lookup(t.getResult())) {
          AccumulateGradOp::create(b, loc, g, t.getNameAttr());
          anyGrad = true;
        }
    if (!anyGrad)
      return func.emitOpError("no adapter receives a gradient");
    OptimizerStepOp::create(b, loc, hyper, kind.getValue());
    return success();
  }
};
} // namespace
