// libFuzzer target: the tokenizer.json loader, then encode/decode with what
// it accepted. The first byte picks how much of the input is text to encode.
#include "compiler/hf/TokenizerJson.h"
#include "runtime/src/tokenizer/Tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t textLen = std::min<size_t>(data[0], size - 1);
  std::string_view text((const char *)data + 1, textLen);
  std::string_view json((const char *)data + 1 + textLen, size - 1 - textLen);
  tlc::TokenizerData td;
  std::string error;
  if (!tlc::parseTokenizerJson(json, "tokenizer.json", &td, &error))
    return 0;
  tlc::Tokenizer tok;
  if (!tlc::Tokenizer::create(td, &tok, &error))
    return 0;
  std::vector<int32_t> ids = tok.encode(text);
  std::string back = tok.decode(ids.data(), ids.size());
  return 0;
}
