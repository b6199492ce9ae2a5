// config.json of Hugging Face BitNet models. Defaults are those of
// transformers' BitNetConfig; both the 4.x (rope_theta) and 5.x
// (rope_parameters) spellings are accepted.
#include "compiler/hf/HFConfig.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace tlc {

const char *weightFormatName(WeightFormat f) {
  switch (f) {
  case WeightFormat::PackedMultiply:
    return "packed (autobitlinear)";
  case WeightFormat::PackedDivide:
    return "packed (bitlinear)";
  case WeightFormat::Master:
    return "master (ternarized at compile time)";
  }
  return "?";
}

namespace {
struct Reader {
  const nlohmann::json &j;
  std::string file;
  std::string *error;

  bool fail(const std::string &msg) {
    *error = file + ": " + msg;
    return false;
  }
  bool positive(const char *key, int64_t *out, bool required = true) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null())
      return required ? fail(std::string("missing '") + key + "'") : true;
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 ||
        it->get<int64_t>() > (int64_t(1) << 31))
      return fail(std::string("'") + key + "' must be a positive integer");
    *out = it->get<int64_t>();
    return true;
  }
  bool number(const nlohmann::json &obj, const char *key, double *out,
              const std::string &where) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null())
      return true;
    if (!it->is_number() || !(it->get<double>() > 0))
      return fail("'" + where + key + "' must be a positive number");
    *out = it->get<double>();
    return true;
  }
};
} // namespace

bool loadModelConfig(const std::string &dir, ModelConfig *cfg,
                     std::string *error) {
  std::string path = dir + "/config.json";
  std::ifstream in(path);
  if (!in) {
    *error = path + ": cannot open (is this a Hugging Face model folder?)";
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parseModelConfig(ss.str(), path, cfg, error);
}

bool parseModelConfig(const std::string &text, const std::string &path,
                      ModelConfig *cfg, std::string *error) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = path + ": not a valid JSON object";
    return false;
  }
  Reader r{j, path, error};
  auto type = j.find("model_type");
  if (type == j.end() || !type->is_string())
    return r.fail("missing 'model_type'");
  if (*type != "bitnet")
    return r.fail("model_type is '" + type->get<std::string>() +
                  "', only 'bitnet' is supported");
  if (auto a = j.find("architectures");
      a != j.end() && a->is_array() && !a->empty() && (*a)[0].is_string()) {
    cfg->architecture = (*a)[0].get<std::string>();
    if (cfg->architecture != "BitNetForCausalLM")
      return r.fail("architectures[0] is '" + cfg->architecture +
                    "', only BitNetForCausalLM is supported");
  }
  if (!r.positive("hidden_size", &cfg->hiddenSize) ||
      !r.positive("intermediate_size", &cfg->intermediateSize) ||
      !r.positive("num_hidden_layers", &cfg->numLayers) ||
      !r.positive("num_attention_heads", &cfg->numHeads) ||
      !r.positive("vocab_size", &cfg->vocabSize) ||
      !r.positive("max_position_embeddings", &cfg->maxPositions, false))
    return false;
  cfg->numKVHeads = cfg->numHeads;
  if (!r.positive("num_key_value_heads", &cfg->numKVHeads, false))
    return false;
  if (cfg->numHeads % cfg->numKVHeads != 0)
    return r.fail("num_attention_heads (" + std::to_string(cfg->numHeads) +
                  ") is not a multiple of num_key_value_heads (" +
                  std::to_string(cfg->numKVHeads) + ")");
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    if (!r.positive("head_dim", &cfg->headDim))
      return false;
  } else {
    if (cfg->hiddenSize % cfg->numHeads != 0)
      return r.fail("hidden_size is not a multiple of num_attention_heads "
                    "and no head_dim is given");
    cfg->headDim = cfg->hiddenSize / cfg->numHeads;
  }
  if (cfg->headDim % 2 != 0)
    return r.fail("head_dim must be even for rotary embeddings");
  if (auto act = j.find("hidden_act");
      act != j.end() && (!act->is_string() || *act != "relu2"))
    return r.fail("hidden_act must be \"relu2\"");
  if (auto b = j.find("attention_bias");
      b != j.end() && !(b->is_boolean() && !b->get<bool>()))
    return r.fail("attention_bias must be false (BitNet has no biases)");
  double eps = cfg->rmsNormEps;
  if (!r.number(j, "rms_norm_eps", &eps, ""))
    return false;
  cfg->rmsNormEps = (float)eps;
  if (!r.number(j, "rope_theta", &cfg->ropeTheta, ""))
    return false;
  if (auto rp = j.find("rope_parameters"); rp != j.end() && !rp->is_null()) {
    if (!rp->is_object())
      return r.fail("'rope_parameters' must be an object");
    if (auto t = rp->find("rope_type");
        t != rp->end() && !(t->is_string() && *t == "default"))
      return r.fail("rope_parameters.rope_type must be \"default\" (no "
                    "rope scaling is supported)");
    if (!r.number(*rp, "rope_theta", &cfg->ropeTheta, "rope_parameters."))
      return false;
  }
  if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
    auto t = rs->is_object() ? rs->find("rope_type") : rs->end();
    if (!rs->is_object() || t == rs->end() || *t != "default")
      return r.fail("rope_scaling is not supported");
  }
  if (auto t = j.find("tie_word_embeddings"); t != j.end()) {
    if (!t->is_boolean())
      return r.fail("'tie_word_embeddings' must be true or false");
    cfg->tiedEmbeddings = t->get<bool>();
  }
  for (auto [key, out] : {std::pair{"bos_token_id", &cfg->bosTokenId},
                          std::pair{"eos_token_id", &cfg->eosTokenId}}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_number_integer())
      *out = it->get<int64_t>();
    else if (it != j.end() && it->is_array() && !it->empty() &&
             (*it)[0].is_number_integer())
      *out = (*it)[0].get<int64_t>();
  }

  cfg->format = WeightFormat::Master;
  if (auto q = j.find("quantization_config"); q != j.end() && !q->is_null()) {
    if (!q->is_object())
      return r.fail("'quantization_config' must be an object");
    auto str = [&](const char *key, const char *dflt) -> std::string {
      auto it = q->find(key);
      return it != q->end() && it->is_string() ? it->get<std::string>() : dflt;
    };
    std::string method = str("quant_method", "");
    if (method != "bitnet")
      return r.fail("quantization_config.quant_method is '" + method +
                    "', only 'bitnet' is supported");
    std::string cls = str("linear_class", "bitlinear");
    std::string mode = str("quantization_mode", "offline");
    if (cls != "bitlinear" && cls != "autobitlinear")
      return r.fail("quantization_config.linear_class '" + cls +
                    "' is not bitlinear or autobitlinear");
    if (mode == "online") {
      if (cls != "autobitlinear")
        return r.fail("quantization_config: online quantization needs "
                      "linear_class autobitlinear");
      cfg->format = WeightFormat::Master;
    } else if (mode == "offline") {
      cfg->format = cls == "autobitlinear" ? WeightFormat::PackedMultiply
                                           : WeightFormat::PackedDivide;
    } else {
      return r.fail("quantization_config.quantization_mode '" + mode +
                    "' is not offline or online");
    }
  }
  return true;
}

} // namespace tlc
