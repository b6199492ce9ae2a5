// tlora-plan-memory: static memory plan of an entry point made of dispatches.
//
// Every value a dispatch reads or writes gets a #tlora.slot. Intermediates
// share one arena: a value is placed at its definition (first fit among the
// free ranges, 64-byte aligned) and its range freed after its last use.
#include "dialects/tlora/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"

#include <map>

namespace mlir::tlora {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "dialects/tlora/Transforms/Passes.h.inc"
} // namespace mlir::tlora

using namespace mlir;
using namespace mlir::tlora;

int64_t mlir::tlora::bufferBytes(Type type, int64_t maxTokens) {
  if (auto q = dyn_cast<QuantizedActType>(type))
    // int8 codes, then 1/s and the sum per token, padded to 16 bytes (GPU
    // kernels read the whole buffer as 16-byte vectors).
    return maxTokens * q.getFeatures() + llvm::alignTo(8 * maxTokens, 16);
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor)
    return 0;
  int64_t n = (tensor.getElementTypeBitWidth() + 7) / 8;
  for (int64_t d : tensor.getShape())
    n *= ShapedType::isDynamic(d) ? maxTokens : d;
  return n;
}

namespace {
// Every device's storage buffer offset alignment (Vulkan allows up to 256).
constexpr int64_t kAlign = 256;

/// First-fit allocator over [0, inf) with coalescing free list.
class ArenaAllocator {
public:
  int64_t allocate(int64_t size) {
    size = llvm::alignTo(size, kAlign);
    for (auto it = free.begin(); it != free.end(); ++it) {
      if (it->second < size)
        continue;
      int64_t offset = it->first, left = it->second - size;
      free.erase(it);
      if (left)
        free[offset + size] = left;
      return offset;
    }
    // Grow: extend a trailing free range if there is one.
    int64_t offset = top;
    if (!free.empty()) {
      auto last = std::prev(free.end());
      if (last->first + last->second == top) {
        offset = last->first;
        free.erase(last);
      }
    }
    top = offset + size;
    return offset;
  }
  void release(int64_t offset, int64_t size) {
    size = llvm::alignTo(size, kAlign);
    auto [it, inserted] = free.emplace(offset, size);
    (void)inserted;
    auto next = std::next(it);
    if (next != free.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free.erase(next);
    }
    if (it != free.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free.erase(it);
      }
    }
  }
  int64_t size() const { return top; }

private:
  std::map<int64_t, int64_t> free; // offset -> size
  int64_t top = 0;
};

struct PlanMemoryPass : mlir::tlora::impl::PlanMemoryPassBase<PlanMemoryPass> {
  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (func->hasAttr(mlir::tlora::attr::kMaxTokens) && failed(plan(func)))
        return signalPassFailure();
  }

  LogicalResult plan(func::FuncOp func) {
    MLIRContext *ctx = &getContext();
    int64_t maxTokens =
        cast<IntegerAttr>(func->getAttr(mlir::tlora::attr::kMaxTokens)).getInt();
    Block &body = func.getBody().front();

    // Last use of every value, by dispatch position.
    llvm::DenseMap<Value, Operation *> lastUse;
    for (Operation &op : body)
      for (Value v : op.getOperands())
        lastUse[v] = &op;

    Value returned = body.getTerminator()->getOperand(0);
    // Training state: adapters, then their gradients (train_abi.h).
    int64_t adapterElements = 0;
    llvm::StringMap<int64_t> stateOffset;
    for (const StateTensor &t : trainStateLayout(func, &adapterElements))
      stateOffset[t.name] = 4 * t.offset;
    bool training = func->hasAttr(mlir::tlora::attr::kOptimizer);
    ArenaAllocator arena;
    llvm::DenseMap<Value, SlotAttr> slots;
    llvm::DenseSet<Value> freed;
    auto slotFor = [&](Value v) -> SlotAttr {
      if (SlotAttr s = slots.lookup(v))
        return s;
      Operation *def = v.getDefiningOp();
      int64_t bytes = bufferBytes(v.getType(), maxTokens);
      SlotAttr s;
      if (auto w = dyn_cast_or_null<WeightOp>(def))
        s = SlotAttr::get(ctx, Space::Param, 0, bytes, w.getNameAttr());
      else if (auto r = dyn_cast_or_null<WeightRowsOp>(def))
        s = SlotAttr::get(ctx, Space::Param,
                          r.getFirst() * (bytes / r.getType().getDimSize(0)),
                          bytes,
                          r.getSource().getDefiningOp<WeightOp>().getNameAttr());
      else if (auto t = dyn_cast_or_null<TernaryWeightOp>(def))
        s = SlotAttr::get(ctx, Space::Param, 0, 0, t.getNameAttr());
      else if (auto c = dyn_cast_or_null<KVCacheOp>(def))
        s = SlotAttr::get(ctx, Space::KV, 0, 0, c.getNameAttr());
      else if (auto t = dyn_cast_or_null<TrainableOp>(def))
        s = SlotAttr::get(ctx, Space::State,
                          stateOffset.lookup(t.getName()) +
                              (t.getGradient() ? 4 * adapterElements : 0),
                          bytes, t.getNameAttr());
      else if (auto st = dyn_cast_or_null<TrainStateOp>(def))
        s = SlotAttr::get(ctx, Space::State, 4 * st.getFirst(), bytes, {});
      else if (isa_and_nonnull<HyperOp>(def))
        s = SlotAttr::get(ctx, Space::Hyper, 0, bytes, {});
      else if (isa_and_nonnull<LossScaleOp>(def)) // tlc_train_hyper_t
        s = SlotAttr::get(ctx, Space::Hyper, 24, bytes, {});
      else if (auto arg = dyn_cast<BlockArgument>(v))
        s = SlotAttr::get(ctx,
                          training && arg.getArgNumber() == 1 ? Space::Labels
                                                              : Space::Input,
                          0, bytes, {});
      else if (v == returned)
        s = SlotAttr::get(ctx, Space::Output, 0, bytes, {});
      else
        s = SlotAttr::get(ctx, Space::Arena, arena.allocate(bytes), bytes, {});
      slots[v] = s;
      return s;
    };

    for (Operation &op : llvm::make_early_inc_range(body)) {
      auto dispatch = dyn_cast<DispatchOp>(op);
      if (!dispatch) {
        if (isa<WeightOp, WeightRowsOp, TernaryWeightOp, KVCacheOp, TrainableOp, HyperOp,
                TrainStateOp, LossScaleOp, arith::ConstantOp, func::ReturnOp>(
                op))
          continue;
        return op.emitOpError("cannot plan memory: not a dispatch (run "
                              "dispatch formation first)");
      }
      SmallVector<Attribute> bindings;
      for (Value v : dispatch.getOperands())
        bindings.push_back(slotFor(v));
      for (Value v : dispatch.getResults())
        bindings.push_back(slotFor(v));
      dispatch.setBindingsAttr(ArrayAttr::get(ctx, bindings));
      // Free the arena ranges of operands whose last use this is; results
      // that nobody reads are freed right away.
      auto freeIfDead = [&](Value v, Operation *at) {
        SlotAttr s = slots.lookup(v);
        if (s && s.getSpace() == Space::Arena && lastUse.lookup(v) == at &&
            freed.insert(v).second)
          arena.release(s.getOffset(), s.getSize());
      };
      for (Value v : dispatch.getOperands())
        freeIfDead(v, &op);
      for (Value v : dispatch.getResults())
        freeIfDead(v, nullptr);
    }
    func->setAttr(mlir::tlora::attr::kArenaSize,
                  IntegerAttr::get(IntegerType::get(ctx, 64), arena.size()));
    return success();
  }
};
} // namespace
