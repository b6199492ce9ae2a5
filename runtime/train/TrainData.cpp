// Training data loading (.npy / .jsonl / text) and the micro-batch order.
#include "runtime/train/TrainData.h"

#include "runtime/train/AdapterIO.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tlc::train {

namespace {

bool endsWith(const std::string &s, const char *suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Offset of the first byte that is not valid UTF-8, or npos.
size_t invalidUtf8(const std::string &s) {
  const auto *p = (const unsigned char *)s.data();
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n)
      return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80)
        return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t minCp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minCp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string::npos;
}

// Tokens of all documents with a per-token "is a target" flag.
struct Stream {
  std::vector<int32_t> ids;
  std::vector<uint8_t> target;
  int32_t bos = -1, eos = -1;

  void push(int32_t id, bool isTarget) {
    ids.push_back(id);
    target.push_back(isTarget ? 1 : 0);
  }
  // Appends [bos] + prompt + completion + [eos]; prompt (and bos) are not
  // targets when `maskPrompt`.
  bool add(const Tokenizer &tok, const std::string *prompt,
           const std::string &completion, const std::string &where,
           std::string *error) {
    bool maskPrompt = prompt != nullptr;
    if (bos >= 0)
      push(bos, !maskPrompt);
    std::vector<int32_t> t;
    auto run = [&](const std::string &text, bool isTarget) {
      t.clear();
      std::string err;
      if (!tok(text, &t, &err)) {
        *error = where + "tokenizer failed: " + err;
        return false;
      }
      for (int32_t id : t) {
        if (id < 0) {
          *error = where + "tokenizer returned negative id " +
                   std::to_string(id);
          return false;
        }
        push(id, isTarget);
      }
      return true;
    };
    if (prompt && !run(*prompt, false))
      return false;
    if (!run(completion, true))
      return false;
    if (eos >= 0)
      push(eos, true);
    return true;
  }
};

} // namespace

uint64_t splitmix64Next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void epochOrder(size_t n, uint64_t seed, uint64_t epoch, bool shuffle,
                std::vector<size_t> *perm) {
  perm->resize(n);
  for (size_t i = 0; i < n; ++i)
    (*perm)[i] = i;
  if (!shuffle)
    return;
  uint64_t state = seed ^ (epoch * 0x9E3779B97F4A7C15ull);
  for (size_t i = n; i-- > 1;) { // i = n-1 down to 1
    size_t j = (size_t)(splitmix64Next(&state) % (uint64_t)(i + 1));
    std::swap((*perm)[i], (*perm)[j]);
  }
}

bool TrainData::loadNpy(const std::string &path, std::string *error) {
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return false;
  };
  std::string bytes;
  if (!readWholeFile(path, &bytes, error))
    return false;
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    return fail("not a .npy file (bad magic)");
  int major = (unsigned char)bytes[6];
  size_t headerLen, headerStart;
  auto byte = [&](size_t i) { return (size_t)(unsigned char)bytes[i]; };
  if (major == 1) {
    headerLen = byte(8) | byte(9) << 8;
    headerStart = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    headerLen = byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
    headerStart = 12;
  } else {
    return fail("unsupported .npy version " + std::to_string(major));
  }
  if (headerLen > bytes.size() - headerStart)
    return fail("truncated: header length " + std::to_string(headerLen) +
                " exceeds the file");
  std::string h = bytes.substr(headerStart, headerLen);

  // The header is a Python dict literal; find the value after 'key':.
  auto value = [&](const char *key, size_t *pos) {
    size_t k = h.find(std::string("'") + key + "'");
    if (k == std::string::npos)
      return false;
    k = h.find(':', k);
    if (k == std::string::npos)
      return false;
    ++k;
    while (k < h.size() && h[k] == ' ')
      ++k;
    *pos = k;
    return true;
  };
  size_t p;
  if (!value("descr", &p) || p >= h.size() || (h[p] != '\'' && h[p] != '"'))
    return fail("header field 'descr' missing");
  size_t q = h.find(h[p], p + 1);
  if (q == std::string::npos)
    return fail("header field 'descr' malformed");
  std::string descr = h.substr(p + 1, q - p - 1);
  int item;
  if (descr == "<i4")
    item = 4;
  else if (descr == "<i8")
    item = 8;
  else
    return fail("header field 'descr' is '" + descr +
                "', expected int32 ('<i4') or int64 ('<i8')");
  if (!value("fortran_order", &p))
    return fail("header field 'fortran_order' missing");
  if (h.compare(p, 4, "True") == 0)
    return fail("header field 'fortran_order' is True; save a C-order array");
  if (h.compare(p, 5, "False") != 0)
    return fail("header field 'fortran_order' malformed");
  if (!value("shape", &p) || p >= h.size() || h[p] != '(')
    return fail("header field 'shape' missing");
  std::vector<uint64_t> shape;
  ++p;
  while (true) {
    while (p < h.size() && (h[p] == ' ' || h[p] == ','))
      ++p;
    if (p < h.size() && h[p] == ')')
      break;
    if (p >= h.size() || h[p] < '0' || h[p] > '9')
      return fail("header field 'shape' malformed");
    uint64_t v = 0;
    while (p < h.size() && h[p] >= '0' && h[p] <= '9') {
      if (v > (1ull << 40))
        return fail("header field 'shape' too large");
      v = v * 10 + (uint64_t)(h[p++] - '0');
    }
    if (p < h.size() && h[p] == 'L')
      ++p;
    shape.push_back(v);
  }
  if (shape.size() != 2)
    return fail("header field 'shape' has " + std::to_string(shape.size()) +
                " dimensions, expected 2 ([examples][" +
                std::to_string(seqLen_) + "])");
  if (shape[1] != (uint64_t)seqLen_)
    return fail("header field 'shape' is (" + std::to_string(shape[0]) + ", " +
                std::to_string(shape[1]) + "), but the module's sequence "
                "length is " + std::to_string(seqLen_));
  if (shape[0] == 0)
    return fail("no examples (shape[0] is 0)");
  if (shape[0] > (1ull << 40) / shape[1])
    return fail("header field 'shape' too large");
  uint64_t count = shape[0] * shape[1];
  uint64_t dataStart = headerStart + headerLen;
  if (bytes.size() - dataStart != count * (uint64_t)item)
    return fail("data is " + std::to_string(bytes.size() - dataStart) +
                " bytes, the shape and dtype need " +
                std::to_string(count * item) + " (truncated file?)");

  const auto *d = (const unsigned char *)bytes.data() + dataStart;
  ids_.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t u = 0;
    for (int b = item - 1; b >= 0; --b)
      u = (u << 8) | d[i * item + b];
    int64_t v = item == 4 ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
    if (v < 0 || v > INT32_MAX)
      return fail("token id " + std::to_string(v) + " at [" +
                  std::to_string(i / shape[1]) + "][" +
                  std::to_string(i % shape[1]) +
                  "] is negative or does not fit int32");
    ids_[i] = (int32_t)v;
  }
  labels_.resize(count);
  for (uint64_t i = 0; i < count; ++i)
    labels_[i] = (i + 1) % shape[1] == 0 ? kIgnoreLabel : ids_[i + 1];
  return true;
}

bool TrainData::load(const std::string &path, int seqLen,
                     const Tokenizer &tokenize, int32_t bos, int32_t eos,
                     std::string *error) {
  ids_.clear();
  labels_.clear();
  permValid_ = false;
  dropped_ = 0;
  seqLen_ = seqLen;
  if (seqLen <= 0) {
    *error = path + ": sequence length must be positive, got " +
             std::to_string(seqLen);
    return false;
  }
  if (endsWith(path, ".npy")) {
    if (loadNpy(path, error))
      return true;
    ids_.clear();
    labels_.clear();
    return false;
  }
  if (!tokenize) {
    *error = path + ": text data needs a tokenizer";
    return false;
  }
  std::string text;
  if (!readWholeFile(path, &text, error))
    return false;
  Stream s;
  s.bos = bos;
  s.eos = eos;
  if (endsWith(path, ".jsonl")) {
    size_t start = 0, line = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos)
        end = text.size();
      std::string l = text.substr(start, end - start);
      start = end + 1;
      ++line;
      if (l.find_first_not_of(" \t\r") == std::string::npos)
        continue;
      std::string where = path + ": line " + std::to_string(line) + ": ";
      auto j = nlohmann::json::parse(l, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        *error = where + "not a valid JSON object";
        return false;
      }
      auto str = [&](const char *key, std::string *out) {
        auto it = j.find(key);
        if (!it->is_string()) {
          *error = where + "'" + key + "' must be a string";
          return false;
        }
        *out = it->get<std::string>();
        return true;
      };
      bool hasText = j.contains("text");
      bool hasPrompt = j.contains("prompt") || j.contains("completion");
      if (hasText && hasPrompt) {
        *error = where + "has both 'text' and 'prompt'/'completion'";
        return false;
      }
      std::string a, b;
      if (hasText) {
        if (!str("text", &a))
          return false;
        if (!s.add(tokenize, nullptr, a, where, error))
          return false;
      } else if (hasPrompt) {
        if (!j.contains("prompt") || !j.contains("completion")) {
          *error = where + "needs both 'prompt' and 'completion'";
          return false;
        }
        if (!str("prompt", &a) || !str("completion", &b))
          return false;
        if (!s.add(tokenize, &a, b, where, error))
          return false;
      } else {
        *error = where + "needs 'text' or 'prompt' and 'completion'";
        return false;
      }
    }
  } else {
    size_t bad = invalidUtf8(text);
    if (bad != std::string::npos) {
      *error = path + ": invalid UTF-8 at byte offset " + std::to_string(bad);
      return false;
    }
    if (!s.add(tokenize, nullptr, text, path + ": ", error))
      return false;
  }

  size_t S = (size_t)seqLen, blocks = s.ids.size() / S;
  if (blocks == 0) {
    *error = path + ": only " + std::to_string(s.ids.size()) +
             " tokens after tokenization, one sequence needs " +
             std::to_string(S);
    return false;
  }
  dropped_ = s.ids.size() - blocks * S;
  ids_.assign(s.ids.begin(), s.ids.begin() + blocks * S);
  labels_.resize(blocks * S);
  for (size_t i = 0; i < blocks * S; ++i)
    labels_[i] = (i + 1) % S == 0 || !s.target[i + 1] ? kIgnoreLabel
                                                      : s.ids[i + 1];
  return true;
}

TrainExample TrainData::example(size_t i) const {
  TrainExample e;
  e.ids.assign(ids_.begin() + i * seqLen_, ids_.begin() + (i + 1) * seqLen_);
  e.labels.assign(labels_.begin() + i * seqLen_,
                  labels_.begin() + (i + 1) * seqLen_);
  return e;
}

void TrainData::batch(uint64_t step, int B, uint64_t seed, bool shuffle,
                      std::vector<int32_t> *ids,
                      std::vector<int32_t> *labels) const {
  size_t n = size(), S = (size_t)seqLen_;
  ids->resize((size_t)B * S);
  labels->resize((size_t)B * S);
  for (int b = 0; b < B; ++b) {
    uint64_t g = step * (uint64_t)B + (uint64_t)b;
    uint64_t epoch = g / n;
    if (!permValid_ || permEpoch_ != epoch || permSeed_ != seed ||
        permShuffle_ != shuffle || perm_.size() != n) {
      epochOrder(n, seed, epoch, shuffle, &perm_);
      permValid_ = true;
      permEpoch_ = epoch;
      permSeed_ = seed;
      permShuffle_ = shuffle;
    }
    size_t ex = perm_[g % n];
    std::copy(ids_.begin() + ex * S, ids_.begin() + (ex + 1) * S,
              ids->begin() + b * S);
    std::copy(labels_.begin() + ex * S, labels_.begin() + (ex + 1) * S,
              labels->begin() + b * S);
  }
}

} // namespace tlc::train
