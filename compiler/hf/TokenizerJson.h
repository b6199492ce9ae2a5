//===- TokenizerJson.h - Load a Hugging Face tokenizer.json -----*- C++ -*-===//
//
// Reads a Hugging Face tokenizer.json into the runtime's TokenizerData. Only
// what the runtime tokenizer reproduces exactly is accepted: a byte-level BPE
// model, no normalizer, the Llama 3 Split regex followed by ByteLevel
// (use_regex=false), the ByteLevel decoder, and plain added tokens. Anything
// else is rejected with one message naming the file and the offending field,
// so a model never ships with a tokenizer that silently differs from the
// reference. Built with -fno-exceptions (nlohmann/json in no-throw mode).
//
//===----------------------------------------------------------------------===//

#ifndef TLC_COMPILER_HF_TOKENIZERJSON_H
#define TLC_COMPILER_HF_TOKENIZERJSON_H

#include "runtime/src/tokenizer/Tokenizer.h"

#include <string>
#include <string_view>

namespace tlc {

/// Loads and validates `path`. On failure returns false, leaves *out
/// untouched and sets *error to "<path>: <field>: <what is wrong>".
bool loadTokenizerJson(const std::string &path, TokenizerData *out,
                       std::string *error);

/// Same as loadTokenizerJson for JSON text already in memory; `name` is used
/// in error messages in place of the path.
bool parseTokenizerJson(std::string_view json, const std::string &name,
                        TokenizerData *out, std::string *error);

} // namespace tlc

#endif // TLC_COMPILER_HF_TOKENIZERJSON_H
