// Training data for `tlc-run train`: fixed-shape examples (S tokens each)
// loaded from .npy token arrays, .jsonl records or plain text, and a
// deterministic, resumable micro-batch order.
#ifndef TLC_RUNTIME_TRAIN_TRAINDATA_H
#define TLC_RUNTIME_TRAIN_TRAINDATA_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tlc::train {

/// Label of a position that does not contribute to the loss.
constexpr int32_t kIgnoreLabel = -100;

/// One sequence of exactly S tokens. labels[t] is the token the model must
/// predict at position t (ids[t+1] for next-token prediction) or -100.
struct TrainExample {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;
};

/// Text -> token ids (without bos/eos). Returns false and sets *error on
/// failure.
using Tokenizer = std::function<bool(const std::string &text,
                                     std::vector<int32_t> *ids,
                                     std::string *error)>;

/// Splitmix64 step (state += 0x9E3779B97F4A7C15, then the usual mix).
uint64_t splitmix64Next(uint64_t *state);

/// Order of epoch `epoch` over n examples, into *perm (size n). Identity when
/// !shuffle; otherwise perm = [0, n), state = seed ^ (epoch *
/// 0x9E3779B97F4A7C15) (mod 2^64), and for i from n-1 down to 1:
///   j = splitmix64Next(&state) % (i + 1); swap(perm[i], perm[j]).
/// runtime/train/train_order.py reproduces it.
void epochOrder(size_t n, uint64_t seed, uint64_t epoch, bool shuffle,
                std::vector<size_t> *perm);

class TrainData {
public:
  /// Loads `path` into examples of `seqLen` tokens, by extension:
  ///  .npy   int32 or int64 [N][seqLen], C order, values in [0, 2^31); each
  ///         row is one example, labels = ids shifted left, last -100.
  ///  .jsonl one object per line: {"text": ...} (all tokens are targets) or
  ///         {"prompt": ..., "completion": ...} (prompt and bos are not
  ///         targets; completion and eos are). Blank lines are skipped.
  ///  other  UTF-8 text, the whole file one document (all targets).
  /// Text documents become [bos] + tokenize(text) + [eos] (bos/eos only when
  /// >= 0; prompt and completion are tokenized separately), are concatenated
  /// and cut into blocks of seqLen tokens (the incomplete tail is dropped).
  /// In a block labels[t] = ids[t+1] if token t+1 is a target, else -100;
  /// labels[seqLen-1] = -100.
  bool load(const std::string &path, int seqLen, const Tokenizer &tokenize,
            int32_t bos, int32_t eos, std::string *error);

  /// Number of examples.
  size_t size() const { return size_t(seqLen_ > 0 ? ids_.size() / seqLen_ : 0); }
  int seqLen() const { return seqLen_; }
  /// Tokens dropped from the end of the packed stream (text inputs).
  size_t droppedTokens() const { return dropped_; }
  TrainExample example(size_t i) const;

  /// Micro batch number `step` (0-based, every micro batch counted) of B
  /// examples: global positions step*B .. step*B+B-1 of the concatenated
  /// epoch orders (position g is epochOrder(N, seed, g / N)[g % N]).
  /// Pure in (step, B, seed, shuffle). *ids and *labels get B*S values,
  /// sequence after sequence. Requires size() > 0 and B > 0.
  void batch(uint64_t step, int B, uint64_t seed, bool shuffle,
             std::vector<int32_t> *ids, std::vector<int32_t> *labels) const;

private:
  bool loadNpy(const std::string &path, std::string *error);
  int seqLen_ = 0;
  size_t dropped_ = 0;
  std::vector<int32_t> ids_, labels_; // N * seqLen each
  // Cache of the last epoch order used by batch().
  mutable std::vector<size_t> perm_;
  mutable uint64_t permEpoch_ = 0, permSeed_ = 0;
  mutable bool permValid_ = false, permShuffle_ = false;
};

} // namespace tlc::train

#endif
