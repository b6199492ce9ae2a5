//===- Tokenizer.h - Byte-level BPE tokenizer (Llama 3 style) ---*- C++ -*-===//
//
// A byte-level BPE tokenizer whose encode/decode match Hugging Face
// `tokenizers` for Llama 3 style tokenizer.json files: added tokens are split
// out first (leftmost-longest), the rest is pre-tokenized with the Llama 3
// regex (implemented by hand, see Tokenizer.cpp), mapped to GPT-2 byte-level
// form and merged by BPE rank. Plain C++17 with no exceptions, RTTI, regex or
// ICU, so the runtime stays small and cross-compiles to phones. TokenizerData
// is the plain description the compiler extracts from tokenizer.json (see
// compiler/hf/TokenizerJson.h) and the runtime rebuilds a Tokenizer from.
//
//===----------------------------------------------------------------------===//

#ifndef TLC_RUNTIME_TOKENIZER_TOKENIZER_H
#define TLC_RUNTIME_TOKENIZER_TOKENIZER_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tlc {

/// Everything needed to rebuild a tokenizer; no derived tables.
struct TokenizerData {
  /// Index = token id. Strings in GPT-2 byte-level form as in tokenizer.json
  /// (e.g. "Ġthe").
  std::vector<std::string> vocab;
  /// Merge rank = index; pair of token ids (left, right). For a pair listed
  /// twice the later rank wins, as in `tokenizers`.
  std::vector<std::pair<int32_t, int32_t>> merges;
  struct Added {
    int32_t id;
    std::string content;
    bool special;
  };
  /// added_tokens of tokenizer.json; ids may lie beyond the vocab.
  std::vector<Added> added;
  /// model.ignore_merges: a pre-token found whole in the vocab is one token.
  bool ignore_merges = false;
};

class Tokenizer {
public:
  /// Builds the lookup tables; returns false and sets *error on inconsistent
  /// data (merge result not in the vocab, bad or duplicate ids, ...).
  static bool create(const TokenizerData &data, Tokenizer *out,
                     std::string *error);

  /// Same ids as `tokenizers` Tokenizer.encode(text, add_special_tokens=False).
  /// Invalid UTF-8 does not fail: each bad byte is one "other" character.
  std::vector<int32_t> encode(std::string_view utf8) const;
  /// Appends to *ids.
  void encode(std::string_view utf8, std::vector<int32_t> *ids) const;

  /// Same string as `tokenizers` decode with the ByteLevel decoder: ids outside
  /// the id space are skipped and invalid UTF-8 becomes U+FFFD.
  std::string decode(const int32_t *ids, size_t n,
                     bool skipSpecial = false) const;
  std::string decode(const std::vector<int32_t> &ids,
                     bool skipSpecial = false) const {
    return decode(ids.data(), ids.size(), skipSpecial);
  }

  /// Bytes a token decodes to (maybe a partial UTF-8 sequence), for streaming
  /// output; empty for unknown ids.
  std::string_view tokenBytes(int32_t id) const;
  /// Id of an added token's content or a vocab entry (byte-level form), or -1.
  int32_t tokenToId(std::string_view token) const;
  bool isSpecial(int32_t id) const;
  /// One past the largest id (vocab plus added tokens).
  size_t idSpaceSize() const { return idSpace_; }
  size_t vocabSize() const { return pure_.size(); }

private:
  struct MergeEntry {
    uint64_t key; // (left << 32) | right; ~0 marks an empty slot.
    int32_t rank;
    int32_t newId;
  };
  struct AddedToken {
    std::string content; // Matched against the input.
    std::string bytes;   // What decode emits.
    int32_t id;
    bool special;
  };
  struct Scratch;

  std::string_view vocabBytes(int32_t id) const {
    return std::string_view(blob_).substr(offsets_[id],
                                          offsets_[id + 1] - offsets_[id]);
  }
  const AddedToken *findAddedById(int32_t id) const;
  const MergeEntry *findMerge(int32_t left, int32_t right) const;
  int32_t findVocabBytes(std::string_view bytes) const;
  void encodeSegment(std::string_view text, Scratch &s,
                     std::vector<int32_t> *ids) const;
  void encodeWord(std::string_view word, Scratch &s,
                  std::vector<int32_t> *ids) const;

  /// Vocab entries as decode sees them, concatenated: raw bytes for entries in
  /// pure byte-level form, else their UTF-8 text (the ByteLevel fallback).
  std::string blob_;
  std::vector<uint32_t> offsets_;
  std::vector<uint8_t> pure_; // Entry is in pure byte-level form.
  /// Open-addressing hash tables, power-of-two sized, linear probing.
  std::vector<MergeEntry> merges_;
  std::vector<int32_t> vocabIndex_; // Pure entries keyed by raw bytes; -1 free.
  int32_t byteToId_[256] = {};
  /// Added tokens sorted by first byte, then longest first; addedStart_[b] is
  /// the first one starting with byte b.
  std::vector<AddedToken> added_;
  uint32_t addedStart_[257] = {};
  std::vector<std::pair<int32_t, uint32_t>> addedById_; // (id, added_ index)
  size_t idSpace_ = 0;
  bool ignoreMerges_ = false;
};

} // namespace tlc

#endif // TLC_RUNTIME_TOKENIZER_TOKENIZER_H
