// Hugging Face BitNet -> tlora. One decoder layer (bitnet.md):
//   h = rms_norm(x); q,k,v = bitlinear(h); rope(q,k); o = attention
//   x += o_proj(rms_norm(o, attn_sub_norm))
//   h = rms_norm(x); m = relu(gate(h))^2 * up(h); x += down(rms_norm(m,
//   ffn_sub_norm))
#include "compiler/hf/HFImporter.h"

#include "dialects/tlora/IR/TloraDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/ScopeExit.h"

#include <cmath>

using namespace mlir;
using namespace mlir::tlora;

namespace tlc {

bool ternarize(const TensorView &w, const TensorView *scale,
               WeightFormat format, int64_t out, int64_t in, float *gamma,
               std::vector<int8_t> *codes, std::string *error) {
  if (codes)
    codes->assign(out * in, 0);
  if (format == WeightFormat::Master) {
    // transformers' WeightQuant: s = 1 / max(mean|W|, 1e-5) in float32,
    // W_t = clamp(round(W * s), -1, 1), dequantized as W_t / s.
    double sum = 0;
    int64_t n = out * in;
    for (int64_t i = 0; i < n; ++i)
      sum += std::fabs(w.at(i));
    float mean = std::max((float)(sum / (double)n), 1e-5f);
    float s = 1.0f / mean;
    for (int64_t i = 0; codes && i < n; ++i) {
      float v = std::nearbyint(w.at(i) * s);
      (*codes)[i] = (int8_t)std::max(-1.0f, std::min(1.0f, v));
    }
    *gamma = 1.0f / s;
    return true;
  }
  // Packed: row r, bits 2i..2i+1 hold the code of unpacked row i*(out/4)+r.
  int64_t rows = out / 4;
  for (int64_t r = 0; codes && r < rows; ++r)
    for (int64_t c = 0; c < in; ++c) {
      uint8_t p = w.data[r * in + c];
      for (int i = 0; i < 4; ++i) {
        int code = (p >> (2 * i)) & 3;
        if (code == 3) {
          *error = w.file + ": tensor '" + w.name +
                   "' holds the invalid 2-bit code 3 at row " +
                   std::to_string(r) + ", column " + std::to_string(c);
          return false;
        }
        (*codes)[(i * rows + r) * in + c] = (int8_t)(code - 1);
      }
    }
  float ws = scale->at(0);
  if (!(ws > 0.0f) || !std::isfinite(ws)) {
    *error = scale->file + ": tensor '" + scale->name +
             "' must be positive and finite, got " + std::to_string(ws);
    return false;
  }
  *gamma = format == WeightFormat::PackedMultiply ? ws : 1.0f / ws;
  return true;
}

namespace {
class Importer {
public:
  Importer(MLIRContext *ctx, const ModelConfig &c, const Checkpoint &ckpt,
           const ImportOptions &o, std::string *error)
      : ctx(ctx), b(ctx), cfg(c), ckpt(ckpt), opts(o), error(error) {}

  OwningOpRef<ModuleOp> run() {
    OwningOpRef<ModuleOp> module = ModuleOp::create(b.getUnknownLoc());
    b.setInsertionPointToEnd(module->getBody());
    if (opts.train && opts.train->step &&
        !buildEntry("train_step", opts.train->batch * opts.train->seqLen,
                    /*step=*/true))
      return nullptr;
    if (!buildEntry("prefill", opts.maxTokens, false) ||
        !buildEntry("decode", 1, false))
      return nullptr;
    if (failed(verify(*module))) {
      *error = "internal error: imported IR does not verify";
      return nullptr;
    }
    return module;
  }

private:
  MLIRContext *ctx;
  OpBuilder b;
  const ModelConfig &cfg;
  const Checkpoint &ckpt;
  ImportOptions opts;
  std::string *error;
  Location loc() { return b.getUnknownLoc(); }

  RankedTensorType act(int64_t features) {
    return RankedTensorType::get({ShapedType::kDynamic, features},
                                 b.getF32Type());
  }

  /// Float parameters keep bf16; f16 and f32 become f32 (exact).
  Type storageType(DType d) {
    return d == DType::BF16 ? Type(b.getBF16Type()) : Type(b.getF32Type());
  }

  Value floatWeight(const std::string &name, std::vector<int64_t> shape) {
    const TensorView *t = ckpt.get(name, shape, error);
    if (!t)
      return nullptr;
    if (t->dtype != DType::BF16 && t->dtype != DType::F16 &&
        t->dtype != DType::F32) {
      *error = t->file + ": tensor '" + name + "' has dtype " +
               dtypeName(t->dtype) + ", expected BF16, F16 or F32";
      return nullptr;
    }
    auto type = RankedTensorType::get(shape, storageType(t->dtype));
    return WeightOp::create(b, loc(), type, name);
  }

  Value ternaryWeight(const std::string &prefix, int64_t out, int64_t in) {
    std::string name = prefix + ".weight";
    const TensorView *w = nullptr, *scale = nullptr;
    if (cfg.format == WeightFormat::Master) {
      w = ckpt.get(name, {out, in}, error);
      if (w && w->dtype != DType::BF16 && w->dtype != DType::F16 &&
          w->dtype != DType::F32) {
        *error = w->file + ": tensor '" + name + "' has dtype " +
                 dtypeName(w->dtype) +
                 ", expected float master weights (config.json has no "
                 "offline quantization_config)";
        return nullptr;
      }
    } else {
      w = ckpt.get(name, {out / 4, in}, error);
      if (w && w->dtype != DType::U8) {
        *error = w->file + ": tensor '" + name + "' has dtype " +
                 dtypeName(w->dtype) +
                 ", expected U8 packed ternary codes (config.json says "
                 "quantization_mode offline)";
        return nullptr;
      }
      if (w)
        scale = ckpt.find(prefix + ".weight_scale");
      if (w && (!scale || scale->numel() != 1)) {
        *error = (scale ? scale->file + ": tensor '" + prefix +
                              ".weight_scale' must hold one value"
                        : "missing tensor '" + prefix + ".weight_scale'");
        return nullptr;
      }
    }
    if (!w)
      return nullptr;
    float gamma;
    if (!ternarize(*w, scale, cfg.format, out, in, &gamma, nullptr, error))
      return nullptr;
    return TernaryWeightOp::create(
        b, loc(), TernaryType::get(ctx, out, in), b.getStringAttr(name),
        b.getF32FloatAttr(gamma),
        WeightSourceAttr::get(ctx, cfg.format == WeightFormat::Master
                                       ? WeightSource::Master
                                       : WeightSource::Packed));
  }

  Value linear(Value x, const std::string &prefix, int64_t out, int64_t in) {
    Value w = ternaryWeight(prefix, out, in);
    if (!w)
      return nullptr;
    Value y = TernaryLinearOp::create(b, loc(), x, w);
    std::string module = prefix.substr(prefix.rfind('.') + 1);
    if (const TrainOptions *t = opts.train) {
      if (!t->targets.count(module))
        return y;
      auto f32 = b.getF32Type();
      Value A = TrainableOp::create(
          b, loc(), RankedTensorType::get({t->rank, in}, f32),
          LoraAdapter::key(prefix, "lora_A"), false);
      Value B = TrainableOp::create(
          b, loc(), RankedTensorType::get({out, t->rank}, f32),
          LoraAdapter::key(prefix, "lora_B"), false);
      Value d = LoraOp::create(b, loc(), x, A, B,
                               b.getF32FloatAttr(t->alpha / (float)t->rank));
      return arith::AddFOp::create(b, loc(), y, d);
    }
    const LoraAdapter *a = opts.adapter;
    if (!a || !a->targets.count(module))
      return y;
    // PEFT: y + scaling * (x A^T) B^T on the unquantized input.
    std::string ka = LoraAdapter::key(prefix, "lora_A"),
                kb = LoraAdapter::key(prefix, "lora_B");
    for (const std::string &k : {ka, kb})
      if (!ckpt.find(k)) {
        *error = a->dir + "/adapter_model.safetensors: missing tensor '" + k +
                 "' (target_modules names " + module + ")";
        return nullptr;
      }
    Value A = floatWeight(ka, {a->rank, in});
    Value B = A ? floatWeight(kb, {out, a->rank}) : nullptr;
    if (!B)
      return nullptr;
    Value d = LoraOp::create(b, loc(), x, A, B,
                             b.getF32FloatAttr(a->scaling));
    return arith::AddFOp::create(b, loc(), y, d);
  }

  Value norm(Value x, const std::string &name, int64_t d) {
    Value w = floatWeight(name, {d});
    if (!w)
      return nullptr;
    return RMSNormOp::create(b, loc(), x, w,
                             b.getF32FloatAttr(cfg.rmsNormEps));
  }

  /// `step`: the training step (loss of a packed batch) instead of logits.
  bool buildEntry(StringRef name, int64_t maxTokens, bool step) {
    int64_t D = cfg.hiddenSize, I = cfg.intermediateSize, V = cfg.vocabSize;
    int64_t hd = cfg.headDim, DQ = cfg.numHeads * hd, DKV = cfg.numKVHeads * hd;
    auto ids = RankedTensorType::get({ShapedType::kDynamic}, b.getI32Type());
    const TrainOptions *train = step ? opts.train : nullptr;
    auto fnType =
        train ? b.getFunctionType({ids, ids}, {RankedTensorType::get(
                                                  {1}, b.getF32Type())})
              : b.getFunctionType({ids, b.getIndexType(), b.getIndexType()},
                                  {act(V)});
    auto fn = func::FuncOp::create(b, loc(), name, fnType);
    fn->setAttr(mlir::tlora::attr::kMaxTokens, b.getI64IntegerAttr(maxTokens));
    if (train) {
      fn->setAttr(mlir::tlora::attr::kOptimizer,
                  mlir::tlora::OptimizerAttr::get(
                      ctx, mlir::tlora::symbolizeOptimizer(train->optimizer)
                               .value_or(mlir::tlora::Optimizer::AdamW)));
      if (train->recompute)
        fn->setAttr(mlir::tlora::attr::kRecompute, b.getUnitAttr());
      fn->setAttr(mlir::tlora::attr::kSeqLen, b.getI64IntegerAttr(train->seqLen));
    }
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(fn.addEntryBlock());
    Value idsArg = fn.getArgument(0), pos, rows, labels;
    if (train) {
      labels = fn.getArgument(1);
      pos = arith::ConstantIndexOp::create(b, loc(), 0);
    } else {
      pos = fn.getArgument(1);
      rows = fn.getArgument(2);
    }

    Value table = floatWeight("model.embed_tokens.weight", {V, D});
    if (!table)
      return false;
    Value x = EmbedOp::create(b, loc(), table, idsArg);
    int64_t maxSeq = opts.maxSeq;
    Block *block = b.getInsertionBlock();
    for (int64_t l = 0; l < cfg.numLayers; ++l) {
      // Training marks each layer's ops: the unit of recomputation.
      Operation *before = block->empty() ? nullptr : &block->back();
      llvm::scope_exit markLayer([&] {
        if (!train)
          return;
        auto it = before ? std::next(before->getIterator()) : block->begin();
        for (; it != block->end(); ++it)
          it->setAttr(mlir::tlora::attr::kLayer, b.getI64IntegerAttr(l));
      });
      std::string p = "model.layers." + std::to_string(l) + ".";
      Value h = norm(x, p + "input_layernorm.weight", D);
      if (!h)
        return false;
      Value q = linear(h, p + "self_attn.q_proj", DQ, D);
      Value k = q ? linear(h, p + "self_attn.k_proj", DKV, D) : nullptr;
      Value v = k ? linear(h, p + "self_attn.v_proj", DKV, D) : nullptr;
      if (!v)
        return false;
      auto rope = [&](Value t) {
        return RopeOp::create(
            b, loc(), t, pos, b.getI64IntegerAttr(hd),
            b.getF64FloatAttr(cfg.ropeTheta),
            train ? b.getI64IntegerAttr(train->seqLen) : IntegerAttr(),
            UnitAttr());
      };
      q = rope(q);
      k = rope(k);
      auto scale = b.getF32FloatAttr(1.0f / std::sqrt((float)hd));
      Value o;
      if (train) {
        o = CausalAttentionOp::create(
                b, loc(), q, k, v,
                b.getI64IntegerAttr(hd), b.getI64IntegerAttr(train->seqLen),
                scale)
                .getResult();
      } else {
        auto cacheType = KVCacheType::get(ctx, maxSeq, cfg.numKVHeads, hd);
        Value kc = KVCacheOp::create(b, loc(), cacheType,
                                     "layers." + std::to_string(l) + ".keys");
        Value vc = KVCacheOp::create(
            b, loc(), cacheType, "layers." + std::to_string(l) + ".values");
        KVAppendOp::create(b, loc(), kc, k, pos);
        KVAppendOp::create(b, loc(), vc, v, pos);
        o = AttentionOp::create(b, loc(), q, kc, vc, pos, scale);
      }
      o = norm(o, p + "self_attn.attn_sub_norm.weight", DQ);
      if (!o || !(o = linear(o, p + "self_attn.o_proj", D, DQ)))
        return false;
      x = arith::AddFOp::create(b, loc(), x, o);
      h = norm(x, p + "post_attention_layernorm.weight", D);
      if (!h)
        return false;
      Value g = linear(h, p + "mlp.gate_proj", I, D);
      Value u = g ? linear(h, p + "mlp.up_proj", I, D) : nullptr;
      if (!u)
        return false;
      Value m = SquaredReluMulOp::create(b, loc(), g, u);
      m = norm(m, p + "mlp.ffn_sub_norm.weight", I);
      if (!m || !(m = linear(m, p + "mlp.down_proj", D, I)))
        return false;
      x = arith::AddFOp::create(b, loc(), x, m);
    }
    x = norm(x, "model.norm.weight", D);
    if (!x)
      return false;
    Value head;
    if (cfg.tiedEmbeddings) {
      head = table;
    } else {
      head = floatWeight("lm_head.weight", {V, D});
      if (!head)
        return false;
    }
    if (train) {
      auto ce = CrossEntropyOp::create(b, loc(), x, head, labels);
      Value loss = MeanLossOp::create(b, loc(), ce.getLoss(), labels);
      func::ReturnOp::create(b, loc(), loss);
      return true;
    }
    if (opts.headBits < 16)
      head = WeightOp::create(
          b, loc(),
          RankedTensorType::get({V, D}, b.getIntegerType(opts.headBits)),
          cfg.tiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight");
    Value logits = DenseOp::create(b, loc(), x, head, rows);
    func::ReturnOp::create(b, loc(), logits);
    return true;
  }
};
} // namespace

OwningOpRef<ModuleOp> importBitNet(MLIRContext *ctx, const ModelConfig &cfg,
                                   const Checkpoint &ckpt,
                                   const ImportOptions &options,
                                   std::string *error) {
  ImportOptions o = options;
  if (o.maxSeq <= 0)
    o.maxSeq = std::min<int64_t>(cfg.maxPositions, 2048);
  o.maxTokens = std::max<int64_t>(1, std::min(o.maxTokens, o.maxSeq));
  if (o.train && o.train->seqLen > cfg.maxPositions) {
    *error = "--seq-len " + std::to_string(o.train->seqLen) +
             " exceeds the model's max_position_embeddings (" +
             std::to_string(cfg.maxPositions) + ")";
    return nullptr;
  }
  ctx->loadDialect<TloraDialect, func::FuncDialect, arith::ArithDialect>();
  Importer importer(ctx, cfg, ckpt, o, error);
  return importer.run();
}

} // namespace tlc
