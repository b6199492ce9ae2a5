// config.json of a Hugging Face BitNet model (transformers 4.x and 5.x).
#ifndef TLC_COMPILER_HF_HFCONFIG_H
#define TLC_COMPILER_HF_HFCONFIG_H

#include <cstdint>
#include <string>

namespace tlc {

/// How the checkpoint stores the ternary projections.
enum class WeightFormat {
  PackedMultiply, // autobitlinear offline: uint8 codes, weight_scale = gamma
  PackedDivide,   // bitlinear offline: uint8 codes, weight_scale = 1/gamma
  Master,         // float master weights, ternarized at compile time
};

struct ModelConfig {
  int64_t hiddenSize = 0, intermediateSize = 0, numLayers = 0;
  int64_t numHeads = 0, numKVHeads = 0, headDim = 0, vocabSize = 0;
  int64_t maxPositions = 2048;
  double ropeTheta = 500000.0;
  float rmsNormEps = 1e-6f;
  bool tiedEmbeddings = false;
  int64_t bosTokenId = -1, eosTokenId = -1;
  WeightFormat format = WeightFormat::Master;
  std::string architecture; // may be empty
};

/// Reads and validates `dir`/config.json. Errors name the file and field.
bool loadModelConfig(const std::string &dir, ModelConfig *out,
                     std::string *error);

/// Validates config.json text; `path` names it in errors.
bool parseModelConfig(const std::string &text, const std::string &path,
                      ModelConfig *out, std::string *error);

const char *weightFormatName(WeightFormat f);

} // namespace tlc

#endif // TLC_COMPILER_HF_HFCONFIG_H
