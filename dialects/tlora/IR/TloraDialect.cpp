// The tlora dialect: registration, verifiers and folders.
#include "dialects/tlora/IR/TloraDialect.h"

#include "mlir/Interfaces/FunctionInterfaces.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMTypes.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::tlora;

#include "dialects/tlora/IR/TloraDialect.cpp.inc"
#include "dialects/tlora/IR/TloraEnums.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/tlora/IR/TloraTypes.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/tlora/IR/TloraAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/tlora/IR/TloraOps.cpp.inc"

void TloraDialect::initialize() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/tlora/IR/TloraTypes.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/tlora/IR/TloraAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialects/tlora/IR/TloraOps.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// Activations are [tokens x features]: rank 2, dynamic or static rows.
static LogicalResult verifyActivation(Operation *op, Type type, StringRef what,
                                      int64_t *features) {
  auto tensor = cast<RankedTensorType>(type);
  if (tensor.getRank() != 2)
    return op->emitOpError()
           << what << " must be [tokens x features], got " << type;
  if (tensor.isDynamicDim(1))
    return op->emitOpError() << what << " must have a static feature size";
  *features = tensor.getDimSize(1);
  return success();
}

static LogicalResult verifySameRows(Operation *op, Type a, Type b) {
  int64_t ra = cast<RankedTensorType>(a).getDimSize(0);
  int64_t rb = cast<RankedTensorType>(b).getDimSize(0);
  if (ra != rb)
    return op->emitOpError("token dimensions differ: ") << a << " vs " << b;
  return success();
}

/// `types` all equal `want` (named for the message).
static LogicalResult verifySameTypes(Operation *op, Type want,
                                     ArrayRef<std::pair<Type, StringRef>> types,
                                     StringRef wantName) {
  for (auto [t, name] : types)
    if (t != want)
      return op->emitOpError() << name << " must have " << wantName
                               << "'s type " << want << ", got " << t;
  return success();
}

/// A [T] vector of `rows` entries (dynamic matches anything).
static LogicalResult verifyPerToken(Operation *op, Type type, int64_t rows,
                                    StringRef what) {
  int64_t n = cast<RankedTensorType>(type).getDimSize(0);
  if (!ShapedType::isDynamic(n) && !ShapedType::isDynamic(rows) && n != rows)
    return op->emitOpError() << what << " must have " << rows
                             << " entries (one per token), got " << type;
  return success();
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

LogicalResult TernaryType::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t outFeatures, int64_t inFeatures) {
  if (outFeatures <= 0 || inFeatures <= 0)
    return emitError() << "ternary weight sizes must be positive";
  if (outFeatures % 4 != 0)
    return emitError() << "ternary out_features must be a multiple of 4 "
                          "(four 2-bit codes per byte), got "
                       << outFeatures;
  return success();
}

//===----------------------------------------------------------------------===//
// Ops
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  if (getName().empty())
    return emitOpError("needs a parameter name");
  if (!getType().hasStaticShape())
    return emitOpError("parameters have static shapes");
  return success();
}

LogicalResult WeightRowsOp::verify() {
  auto src = getSource().getType(), res = getType();
  if (!getSource().getDefiningOp<WeightOp>())
    return emitOpError("source must be a tlora.weight");
  if (src.getRank() != 2 || res.getRank() != 2 ||
      src.getElementType() != res.getElementType() ||
      src.getDimSize(1) != res.getDimSize(1))
    return emitOpError("result must be rows of the [rows x cols] source");
  if (!src.getElementType().isBF16() && !src.getElementType().isF32())
    return emitOpError("row views are of bf16 or f32 parameters");
  int64_t first = getFirst(), count = res.getDimSize(0);
  if (first < 0 || count <= 0 || first + count > src.getDimSize(0))
    return emitOpError("rows [")
           << first << ", " << first + count << ") outside the source's "
           << src.getDimSize(0);
  return success();
}

LogicalResult TernaryWeightOp::verify() {
  if (getName().empty())
    return emitOpError("needs a parameter name");
  float scale = getScale().convertToFloat();
  if (!(scale > 0.0f) || !std::isfinite(scale))
    return emitOpError("scale must be positive and finite, got ") << scale;
  return success();
}

LogicalResult EmbedOp::verify() {
  auto table = getTable().getType();
  int64_t d;
  if (table.getRank() != 2)
    return emitOpError("table must be [vocab x hidden]");
  if (failed(verifyActivation(*this, getType(), "result", &d)))
    return failure();
  if (d != table.getDimSize(1))
    return emitOpError("result width ")
           << d << " != table width " << table.getDimSize(1);
  if (getType().getDimSize(0) != getIds().getType().getDimSize(0))
    return emitOpError("one row per id");
  return success();
}

LogicalResult RMSNormOp::verify() {
  int64_t d, dr;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &d)) ||
      failed(verifyActivation(*this, getType(), "result", &dr)) ||
      failed(verifySameRows(*this, getInput().getType(), getType())))
    return failure();
  auto w = getWeight().getType();
  if (w.getRank() != 1 || w.getDimSize(0) != d || dr != d)
    return emitOpError("weight must be [") << d << "], got " << w;
  if (getEpsilon().convertToFloat() <= 0.0f)
    return emitOpError("epsilon must be positive");
  return success();
}

static LogicalResult verifyLinear(Operation *op, Type input, TernaryType w,
                                  Type result) {
  int64_t k, n;
  if (failed(verifyActivation(op, result, "result", &n)))
    return failure();
  if (auto q = dyn_cast<QuantizedActType>(input))
    k = q.getFeatures();
  else if (failed(verifyActivation(op, input, "input", &k)) ||
           failed(verifySameRows(op, input, result)))
    return failure();
  if (k != w.getInFeatures())
    return op->emitOpError("input features ")
           << k << " != weight in_features " << w.getInFeatures();
  if (n != w.getOutFeatures())
    return op->emitOpError("result features ")
           << n << " != weight out_features " << w.getOutFeatures();
  return success();
}

LogicalResult TernaryLinearOp::verify() {
  return verifyLinear(*this, getInput().getType(), getWeight().getType(),
                      getType());
}

LogicalResult TernaryMatmulOp::verify() {
  return verifyLinear(*this, getInput().getType(), getWeight().getType(),
                      getType());
}

LogicalResult QuantizeOp::verify() {
  int64_t k;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &k)))
    return failure();
  if (k != getType().getFeatures())
    return emitOpError("features differ: ")
           << k << " vs " << getType().getFeatures();
  return success();
}

/// A LoRA branch from k to n features: lora_A [r x k], lora_B [n x r].
static LogicalResult verifyLoraShapes(Operation *op, ShapedType a,
                                      ShapedType b, int64_t k, int64_t n) {
  if (a.getRank() != 2 || b.getRank() != 2)
    return op->emitOpError("lora_A and lora_B must be matrices");
  int64_t r = a.getDimSize(0);
  if (a.getDimSize(1) != k)
    return op->emitOpError("lora_A must be [r x ") << k << "], got " << a;
  if (b.getDimSize(0) != n || b.getDimSize(1) != r)
    return op->emitOpError("lora_B must be [")
           << n << " x " << r << "], got " << b;
  return success();
}

LogicalResult LoraOp::verify() {
  int64_t k, n;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &k)) ||
      failed(verifyActivation(*this, getType(), "result", &n)) ||
      failed(verifySameRows(*this, getInput().getType(), getType())))
    return failure();
  return verifyLoraShapes(*this, getLoraA().getType(), getLoraB().getType(),
                          k, n);
}

namespace {
/// x + lora(x', A, B, scaling = 0) -> x: an adapter scaled by zero adds
/// nothing.
struct DropZeroScaledLora : OpRewritePattern<arith::AddFOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(arith::AddFOp add,
                                PatternRewriter &rewriter) const override {
    for (int i = 0; i < 2; ++i) {
      auto lora = add->getOperand(i).getDefiningOp<LoraOp>();
      if (lora && lora.getScaling().convertToFloat() == 0.0f &&
          add->getOperand(1 - i).getType() == add.getType()) {
        rewriter.replaceOp(add, add->getOperand(1 - i));
        return success();
      }
    }
    return failure();
  }
};
} // namespace

void LoraOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                         MLIRContext *context) {
  patterns.add<DropZeroScaledLora>(context);
}

LogicalResult DenseOp::verify() {
  int64_t k, n;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &k)) ||
      failed(verifyActivation(*this, getType(), "result", &n)))
    return failure();
  auto w = getWeight().getType();
  if (w.getRank() != 2 || w.getDimSize(1) != k || w.getDimSize(0) != n)
    return emitOpError("weight must be [") << n << " x " << k << "], got " << w;
  return success();
}

LogicalResult RopeOp::verify() {
  int64_t d, dr;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &d)) ||
      failed(verifyActivation(*this, getType(), "result", &dr)) ||
      failed(verifySameRows(*this, getInput().getType(), getType())))
    return failure();
  int64_t hd = getHeadDim();
  if (hd <= 0 || hd % 2 != 0 || d % hd != 0 || d != dr)
    return emitOpError("head_dim ") << hd << " must be even and divide " << d;
  if (getTheta().convertToDouble() <= 0.0)
    return emitOpError("theta must be positive");
  return success();
}

LogicalResult KVAppendOp::verify() {
  int64_t d;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &d)))
    return failure();
  auto c = getCache().getType();
  if (d != c.getKvHeads() * c.getHeadDim())
    return emitOpError("input width ")
           << d << " != kv_heads*head_dim " << c.getKvHeads() * c.getHeadDim();
  return success();
}

LogicalResult AttentionOp::verify() {
  int64_t dq, dr;
  if (failed(verifyActivation(*this, getQuery().getType(), "query", &dq)) ||
      failed(verifyActivation(*this, getType(), "result", &dr)) ||
      failed(verifySameRows(*this, getQuery().getType(), getType())))
    return failure();
  auto k = getKeys().getType(), v = getValues().getType();
  if (k != v)
    return emitOpError("key and value caches must have the same type");
  if (dq % k.getHeadDim() != 0 || dq != dr)
    return emitOpError("query width must be heads*head_dim");
  int64_t heads = dq / k.getHeadDim();
  if (heads % k.getKvHeads() != 0)
    return emitOpError("heads ")
           << heads << " must be a multiple of kv_heads " << k.getKvHeads();
  return success();
}

LogicalResult SquaredReluMulOp::verify() {
  if (getGate().getType() != getUp().getType() ||
      getGate().getType() != getType())
    return emitOpError("gate, up and result must have one type");
  return success();
}

//===----------------------------------------------------------------------===//
// Training ops
//===----------------------------------------------------------------------===//

LogicalResult CausalAttentionOp::verify() {
  int64_t dq, dk, dv, dout, heads;
  if (failed(verifyActivation(*this, getQuery().getType(), "query", &dq)) ||
      failed(verifyActivation(*this, getKey().getType(), "key", &dk)) ||
      failed(verifyActivation(*this, getValue().getType(), "value", &dv)) ||
      failed(verifyActivation(*this, getType(0), "result", &dout)) ||
      failed(verifyActivation(*this, getLse().getType(), "lse", &heads)))
    return failure();
  int64_t hd = getHeadDim();
  if (hd <= 0 || dq % hd || dk % hd || dk != dv || dq != dout ||
      dq / hd != heads || (dq / hd) % (dk / hd))
    return emitOpError("needs query [T x H*")
           << hd << "], key/value [T x KVH*" << hd
           << "] with KVH dividing H, lse [T x H]";
  if (getSeqLen() <= 0)
    return emitOpError("seq_len must be positive");
  return success();
}

LogicalResult TernaryMatmulTransposedOp::verify() {
  int64_t n, k;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &n)) ||
      failed(verifyActivation(*this, getType(), "result", &k)) ||
      failed(verifySameRows(*this, getInput().getType(), getType())))
    return failure();
  auto w = getWeight().getType();
  if (w.getOutFeatures() != n || w.getInFeatures() != k)
    return emitOpError("weight must be ")
           << n << " x " << k << " (out x in), got " << w;
  return success();
}

/// The LM head of a fused cross entropy: [vocab x k].
static LogicalResult verifyHeadWeight(Operation *op, ShapedType w, int64_t k) {
  if (w.getRank() != 2 || w.getDimSize(1) != k)
    return op->emitOpError("weight must be [vocab x ") << k << "], got " << w;
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  int64_t k;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &k)) ||
      failed(verifyHeadWeight(*this, getWeight().getType(), k)))
    return failure();
  int64_t rows = getInput().getType().getDimSize(0);
  if (failed(verifyPerToken(*this, getLabels().getType(), rows, "labels")) ||
      failed(verifyPerToken(*this, getLoss().getType(), rows, "loss")) ||
      failed(verifyPerToken(*this, getLse().getType(), rows, "lse")))
    return failure();
  return success();
}

LogicalResult CausalAttentionGradOp::verify() {
  int64_t dq, dk, heads;
  if (failed(verifyActivation(*this, getQuery().getType(), "query", &dq)) ||
      failed(verifyActivation(*this, getKey().getType(), "key", &dk)) ||
      failed(verifyActivation(*this, getLse().getType(), "lse", &heads)))
    return failure();
  Type q = getQuery().getType(), k = getKey().getType();
  if (failed(verifySameTypes(*this, q,
                             {{getOutput().getType(), "output"},
                              {getOutputGrad().getType(), "output_grad"},
                              {getQueryGrad().getType(), "query_grad"}},
                             "query")) ||
      failed(verifySameTypes(*this, k,
                             {{getValue().getType(), "value"},
                              {getKeyGrad().getType(), "key_grad"},
                              {getValueGrad().getType(), "value_grad"}},
                             "key")) ||
      failed(verifySameRows(*this, q, k)) ||
      failed(verifySameRows(*this, q, getLse().getType())))
    return failure();
  int64_t hd = getHeadDim();
  if (hd <= 0 || dq % hd || dk % hd || dq / hd != heads ||
      (dq / hd) % (dk / hd))
    return emitOpError("needs query [T x H*")
           << hd << "], key/value [T x KVH*" << hd
           << "] with KVH dividing H, lse [T x H]";
  if (getSeqLen() <= 0)
    return emitOpError("seq_len must be positive");
  return success();
}

LogicalResult RMSNormGradOp::verify() {
  int64_t d;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &d)) ||
      failed(verifySameTypes(*this, getInput().getType(),
                             {{getResultGrad().getType(), "result_grad"},
                              {getInputGrad().getType(), "input_grad"}},
                             "input")))
    return failure();
  auto w = getWeight().getType();
  if (w.getRank() != 1 || w.getDimSize(0) != d)
    return emitOpError("weight must be [") << d << "], got " << w;
  return success();
}

LogicalResult LoraGradOp::verify() {
  int64_t k, n;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &k)) ||
      failed(verifyActivation(*this, getResultGrad().getType(), "result_grad",
                              &n)) ||
      failed(verifySameRows(*this, getInput().getType(),
                            getResultGrad().getType())) ||
      failed(verifySameTypes(*this, getInput().getType(),
                             {{getInputGrad().getType(), "input_grad"}},
                             "input")))
    return failure();
  auto a = getLoraA().getType(), b = getLoraB().getType();
  if (failed(verifyLoraShapes(*this, a, b, k, n)))
    return failure();
  auto ga = getLoraAGrad().getType(), gb = getLoraBGrad().getType();
  if (ga.getShape() != a.getShape() || gb.getShape() != b.getShape())
    return emitOpError("gradients must have the shapes of lora_A and lora_B");
  return success();
}

LogicalResult SquaredReluMulGradOp::verify() {
  int64_t d;
  if (failed(verifyActivation(*this, getGate().getType(), "gate", &d)))
    return failure();
  return verifySameTypes(*this, getGate().getType(),
                         {{getUp().getType(), "up"},
                          {getResultGrad().getType(), "result_grad"},
                          {getGateGrad().getType(), "gate_grad"},
                          {getUpGrad().getType(), "up_grad"}},
                         "gate");
}

LogicalResult CrossEntropyGradOp::verify() {
  int64_t k;
  if (failed(verifyActivation(*this, getInput().getType(), "input", &k)) ||
      failed(verifySameTypes(*this, getInput().getType(),
                             {{getInputGrad().getType(), "input_grad"}},
                             "input")) ||
      failed(verifyHeadWeight(*this, getWeight().getType(), k)))
    return failure();
  int64_t rows = getInput().getType().getDimSize(0);
  if (failed(verifyPerToken(*this, getLabels().getType(), rows, "labels")) ||
      failed(verifyPerToken(*this, getLse().getType(), rows, "lse")) ||
      failed(verifyPerToken(*this, getLossGrad().getType(), rows,
                            "loss_grad")))
    return failure();
  return success();
}

LogicalResult MeanLossOp::verify() {
  int64_t rows = getLoss().getType().getDimSize(0);
  if (failed(verifyPerToken(*this, getLabels().getType(), rows, "labels")))
    return failure();
  if (getType().getDimSize(0) != 1)
    return emitOpError("result must be a tensor<1xf32>, got ") << getType();
  return success();
}

LogicalResult MeanLossGradOp::verify() {
  if (getResultGrad().getType().getDimSize(0) != 1)
    return emitOpError("result_grad must be a tensor<1xf32>");
  return verifyPerToken(*this, getLossGrad().getType(),
                        getLabels().getType().getDimSize(0), "loss_grad");
}

LogicalResult AccumulateGradOp::verify() {
  if (getGrad().getType().getRank() != 2 || getName().empty())
    return emitOpError("needs a named 2-D gradient, got ")
           << getGrad().getType();
  return success();
}

/// A dispatch names a function of the `kernels` module whose buffer
/// arguments (those before the scalars) match its operands and results, and
/// has one binding per operand and result once planned.
LogicalResult
DispatchOp::verifySymbolUses(SymbolTableCollection &symbols) {
  unsigned buffers = getNumOperands() + getNumResults();
  if (auto b = getBindings(); b && b->size() != buffers)
    return emitOpError("has ")
           << b->size() << " bindings for " << buffers << " operands and results";
  Operation *kernel = symbols.lookupNearestSymbolFrom(*this, getKernel());
  if (!kernel) {
    // Kernels live in a nested module that later phases may have lowered
    // away from this view; only a missing module with the name is an error.
    auto top = (*this)->getParentOfType<ModuleOp>();
    for (auto m : top.getOps<ModuleOp>())
      if (m.getSymName() == getKernel().getRootReference().getValue())
        return emitOpError("names kernel ")
               << getKernel() << ", which the kernels module lacks";
    return success();
  }
  auto fn = dyn_cast<FunctionOpInterface>(kernel);
  if (!fn)
    return emitOpError("kernel ") << getKernel() << " is not a function";
  // Kernels take their buffers (memrefs or pointers), then scalars (T,
  // pos, rows: integers, or one block marked tlora.scalars) whose number
  // and form are the target's.
  unsigned kernelBuffers = 0;
  for (auto [i, t] : llvm::enumerate(fn.getArgumentTypes())) {
    if (t.isIntOrIndexOrFloat() || fn.getArgAttr(i, attr::kScalars))
      break;
    ++kernelBuffers;
  }
  if (kernelBuffers != buffers)
    return emitOpError("kernel ")
           << getKernel() << " takes " << kernelBuffers
           << " buffers, the dispatch passes " << buffers;
  return success();
}



/// The callee is a function of the nearest symbol table whose parameters
/// are the operands', with a pointer for each memref.
LogicalResult
MicrokernelCallOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto fn = symbols.lookupNearestSymbolFrom<FunctionOpInterface>(
      *this, getCalleeAttr());
  if (!fn)
    return emitOpError("calls ") << getCalleeAttr()
                                 << ", which no declaration names";
  ArrayRef<Type> params = fn.getArgumentTypes();
  if (params.size() != getNumOperands() || !fn.getResultTypes().empty())
    return emitOpError("passes ")
           << getNumOperands() << " arguments; " << getCalleeAttr()
           << " takes " << params.size() << " and returns nothing";
  for (auto [i, operand, param] : llvm::enumerate(getOperands(), params)) {
    Type expected = isa<MemRefType>(operand.getType())
                        ? Type(LLVM::LLVMPointerType::get(getContext()))
                        : operand.getType();
    if (param != expected)
      return emitOpError("argument ")
             << i << " of " << getCalleeAttr() << " is " << param
             << ", the call passes " << operand.getType();
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Result types (InferTypeOpInterface): builders take no result types, and a
// result that differs from the inferred one fails to verify.
//===----------------------------------------------------------------------===//

/// Size `i` of a ranked tensor of rank `rank`, or failure.
static FailureOr<int64_t> dimOf(std::optional<Location> loc, Type type,
                                int64_t rank, unsigned i, StringRef what) {
  auto t = dyn_cast<RankedTensorType>(type);
  if (!t || t.getRank() != rank)
    return emitOptionalError(loc, what, " must have rank ", rank, ", got ",
                             type);
  return t.getDimSize(i);
}

/// f32 [rows x features], rows taken from dim 0 of `rowsOf` (dynamic when
/// it has none).
static Type activationType(Type rowsOf, int64_t features) {
  int64_t rows = ShapedType::kDynamic;
  if (auto t = dyn_cast<RankedTensorType>(rowsOf); t && t.getRank() >= 1)
    rows = t.getDimSize(0);
  return RankedTensorType::get({rows, features},
                               Float32Type::get(rowsOf.getContext()));
}

/// f32 [rows], rows from dim 0 of `rowsOf`.
static Type perTokenType(Type rowsOf) {
  return RankedTensorType::get({cast<RankedTensorType>(rowsOf).getDimSize(0)},
                               Float32Type::get(rowsOf.getContext()));
}

static Type scalarType(MLIRContext *ctx) {
  return RankedTensorType::get({1}, Float32Type::get(ctx));
}

#define TLORA_INFER(Op)                                                        \
  LogicalResult Op::inferReturnTypes(MLIRContext *ctx,                         \
                                     std::optional<Location> loc,              \
                                     Op::Adaptor a,                            \
                                     SmallVectorImpl<Type> &types)

TLORA_INFER(EmbedOp) {
  auto d = dimOf(loc, a.getTable().getType(), 2, 1, "table");
  if (failed(d))
    return failure();
  types.push_back(activationType(a.getIds().getType(), *d));
  return success();
}

TLORA_INFER(RMSNormOp) {
  types.push_back(a.getInput().getType());
  return success();
}

TLORA_INFER(TernaryLinearOp) {
  types.push_back(activationType(
      a.getInput().getType(),
      cast<TernaryType>(a.getWeight().getType()).getOutFeatures()));
  return success();
}

TLORA_INFER(QuantizeOp) {
  auto k = dimOf(loc, a.getInput().getType(), 2, 1, "input");
  if (failed(k))
    return failure();
  types.push_back(QuantizedActType::get(ctx, *k));
  return success();
}

TLORA_INFER(TernaryMatmulOp) {
  // Quantized activations do not carry their token count.
  types.push_back(activationType(
      Float32Type::get(ctx),
      cast<TernaryType>(a.getWeight().getType()).getOutFeatures()));
  return success();
}

/// Any token count matches: quantized activations do not carry theirs.
bool TernaryMatmulOp::isCompatibleReturnTypes(TypeRange inferred,
                                              TypeRange actual) {
  auto a = dyn_cast<RankedTensorType>(inferred.front());
  auto b = dyn_cast<RankedTensorType>(actual.front());
  return inferred.size() == 1 && actual.size() == 1 && a && b &&
         a.getRank() == 2 && b.getRank() == 2 &&
         a.getDimSize(1) == b.getDimSize(1) &&
         a.getElementType() == b.getElementType();
}

TLORA_INFER(LoraOp) {
  auto n = dimOf(loc, a.getLoraB().getType(), 2, 0, "lora_B");
  if (failed(n))
    return failure();
  types.push_back(activationType(a.getInput().getType(), *n));
  return success();
}

TLORA_INFER(DenseOp) {
  auto n = dimOf(loc, a.getWeight().getType(), 2, 0, "weight");
  if (failed(n))
    return failure();
  types.push_back(activationType(a.getInput().getType(), *n));
  return success();
}

TLORA_INFER(RopeOp) {
  types.push_back(a.getInput().getType());
  return success();
}

TLORA_INFER(AttentionOp) {
  types.push_back(a.getQuery().getType());
  return success();
}

TLORA_INFER(LossScaleOp) {
  types.push_back(scalarType(ctx));
  return success();
}

TLORA_INFER(CausalAttentionOp) {
  auto dq = dimOf(loc, a.getQuery().getType(), 2, 1, "query");
  int64_t hd = a.getHeadDim();
  if (failed(dq))
    return failure();
  if (hd <= 0 || *dq % hd != 0)
    return emitOptionalError(loc, "head_dim ", hd, " must divide ", *dq);
  types.push_back(a.getQuery().getType());
  types.push_back(activationType(a.getQuery().getType(), *dq / hd));
  return success();
}

TLORA_INFER(CausalAttentionGradOp) {
  types.append({a.getQuery().getType(), a.getKey().getType(),
                a.getValue().getType()});
  return success();
}

TLORA_INFER(RMSNormGradOp) {
  types.push_back(a.getInput().getType());
  return success();
}

TLORA_INFER(TernaryMatmulTransposedOp) {
  types.push_back(activationType(
      a.getInput().getType(),
      cast<TernaryType>(a.getWeight().getType()).getInFeatures()));
  return success();
}

TLORA_INFER(LoraGradOp) {
  auto f32 = Float32Type::get(ctx);
  types.push_back(a.getInput().getType());
  for (Value w : {a.getLoraA(), a.getLoraB()})
    types.push_back(cast<RankedTensorType>(w.getType()).clone(f32));
  return success();
}

TLORA_INFER(SquaredReluMulGradOp) {
  types.append({a.getGate().getType(), a.getUp().getType()});
  return success();
}

TLORA_INFER(CrossEntropyOp) {
  if (failed(dimOf(loc, a.getInput().getType(), 2, 0, "input")))
    return failure();
  Type perToken = perTokenType(a.getInput().getType());
  types.append({perToken, perToken});
  return success();
}

TLORA_INFER(CrossEntropyGradOp) {
  types.push_back(a.getInput().getType());
  return success();
}

TLORA_INFER(MeanLossOp) {
  types.push_back(scalarType(ctx));
  return success();
}

TLORA_INFER(MeanLossGradOp) {
  types.push_back(perTokenType(a.getLabels().getType()));
  return success();
}

#undef TLORA_INFER
