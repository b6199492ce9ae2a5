//===- Tokenizer.cpp - Byte-level BPE tokenizer (Llama 3 style) -----------===//
//
// Implementation of the byte-level BPE tokenizer. The Llama 3 pre-tokenizer
// regex
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// is evaluated by a hand-written scanner that reproduces Oniguruma's
// backtracking result alternative by alternative, over Unicode class tables
// generated into UnicodeTables.inc by gen_unicode_tables.py: the runtime has
// no regex or ICU dependency so that it cross-compiles to phones. BPE merging
// replays `tokenizers`' priority-queue algorithm (lowest rank, then leftmost
// position, stale entries detected by the merged id) so ties and stale queue
// entries resolve identically.
//
//===----------------------------------------------------------------------===//

#include "Tokenizer.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_map>

namespace tlc {
namespace {

enum CharClass : uint8_t { kOther, kLetter, kNumber, kSpace, kNewline };

#include "UnicodeTables.inc"

uint8_t classOf(uint32_t cp) {
  if (cp < 128)
    return kAsciiClass[cp];
  const uint32_t *end = kClassRuns + sizeof(kClassRuns) / sizeof(kClassRuns[0]);
  const uint32_t *it = std::upper_bound(kClassRuns, end, (cp << 3) | 7);
  return static_cast<uint8_t>(it[-1] & 7);
}

/// Decodes the UTF-8 character at s[0..n). Returns its length, or -k when the
/// first k bytes are an invalid or truncated sequence (k = the maximal
/// subpart, as Rust's String::from_utf8_lossy counts it).
int decodeUtf8(const uint8_t *s, size_t n, uint32_t *cp) {
  uint8_t b0 = s[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  uint32_t c;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    c = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    c = b0 & 0x0F;
    lo = b0 == 0xE0 ? 0xA0 : 0x80; // No overlongs.
    hi = b0 == 0xED ? 0x9F : 0xBF; // No surrogates.
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    c = b0 & 0x07;
    lo = b0 == 0xF0 ? 0x90 : 0x80;
    hi = b0 == 0xF4 ? 0x8F : 0xBF; // <= U+10FFFF.
  } else {
    return -1;
  }
  for (int k = 1; k <= need; ++k) {
    if (static_cast<size_t>(k) >= n || s[k] < lo || s[k] > hi)
      return -k;
    c = (c << 6) | (s[k] & 0x3F);
    lo = 0x80;
    hi = 0xBF;
  }
  *cp = c;
  return need + 1;
}

/// GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves,
/// the other 68 bytes map in order to U+0100.. . Returns -1 for other chars.
int byteOfChar(uint32_t cp) {
  if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) ||
      (cp >= 0xAE && cp <= 0xFF))
    return static_cast<int>(cp);
  if (cp < 0x100 || cp >= 0x100 + 68)
    return -1;
  uint32_t n = cp - 0x100; // 0x00..0x20, then 0x7F..0xA0, then 0xAD.
  if (n <= 0x20)
    return static_cast<int>(n);
  if (n <= 0x20 + 34)
    return static_cast<int>(0x7F + n - 0x21);
  return 0xAD;
}

/// ByteLevel decoding of one token string: its bytes if every character is in
/// the byte-level alphabet (returns true), else its UTF-8 text as is.
bool byteLevelDecode(std::string_view text, std::string *out) {
  out->clear();
  const auto *s = reinterpret_cast<const uint8_t *>(text.data());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    int len = decodeUtf8(s + i, text.size() - i, &cp);
    int b = len > 0 ? byteOfChar(cp) : -1;
    if (b < 0) {
      out->assign(text.data(), text.size());
      return false;
    }
    out->push_back(static_cast<char>(b));
    i += len;
  }
  return true;
}

uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

uint64_t hashBytes(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL; // FNV-1a, then mixed.
  for (unsigned char c : s)
    h = (h ^ c) * 0x100000001b3ULL;
  return mix64(h);
}

size_t tableSize(size_t n) {
  size_t size = 16;
  while (size < n + n / 2)
    size <<= 1;
  return size;
}

uint64_t pairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
         static_cast<uint32_t>(right);
}

constexpr uint64_t kEmptyKey = ~0ULL;

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  int32_t len;
};

struct QueuedMerge {
  int32_t rank;
  int32_t pos;
  int32_t newId;
};

/// Heap order: lower rank first, then lower position.
bool mergeAfter(const QueuedMerge &a, const QueuedMerge &b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

bool fail(std::string *error, std::string message) {
  if (error)
    *error = std::move(message);
  return false;
}

} // namespace

struct Tokenizer::Scratch {
  std::vector<uint32_t> offsets; // Byte offset of each character, plus end.
  std::vector<uint8_t> classes;  // CharClass of each character.
  std::vector<Symbol> symbols;
  std::vector<QueuedMerge> queue;
};

bool Tokenizer::create(const TokenizerData &data, Tokenizer *out,
                       std::string *error) {
  Tokenizer t;
  size_t vocabSize = data.vocab.size();
  if (vocabSize >= 0x7fffffff)
    return fail(error, "tokenizer: vocab too large");

  // Vocab: bytes as decode sees them.
  t.offsets_.reserve(vocabSize + 1);
  t.pure_.reserve(vocabSize);
  t.offsets_.push_back(0);
  std::string bytes;
  for (const std::string &text : data.vocab) {
    t.pure_.push_back(byteLevelDecode(text, &bytes));
    t.blob_ += bytes;
    t.offsets_.push_back(static_cast<uint32_t>(t.blob_.size()));
  }

  // Pure entries are indexed by raw bytes (distinct texts give distinct
  // bytes); the rare others by text, for merge resolution only.
  t.vocabIndex_.assign(tableSize(vocabSize), -1);
  size_t mask = t.vocabIndex_.size() - 1;
  std::fill(std::begin(t.byteToId_), std::end(t.byteToId_), -1);
  std::unordered_map<std::string_view, int32_t> impure;
  for (size_t i = 0; i < vocabSize; ++i) {
    auto id = static_cast<int32_t>(i);
    int32_t other = -1;
    if (!t.pure_[i]) {
      auto ins = impure.emplace(data.vocab[i], id);
      if (!ins.second)
        other = ins.first->second;
    } else {
      std::string_view b = t.vocabBytes(id);
      if (b.size() == 1)
        t.byteToId_[static_cast<unsigned char>(b[0])] = id;
      size_t slot = hashBytes(b) & mask;
      while (t.vocabIndex_[slot] >= 0 && other < 0) {
        if (t.vocabBytes(t.vocabIndex_[slot]) == b)
          other = t.vocabIndex_[slot];
        slot = (slot + 1) & mask;
      }
      t.vocabIndex_[slot] = id;
    }
    if (other >= 0)
      return fail(error, "tokenizer: vocab[" + std::to_string(i) + "] '" +
                             data.vocab[i] + "' duplicates vocab[" +
                             std::to_string(other) + "]");
  }

  // Merges: (left, right) -> (rank, id of left+right); later duplicates win.
  t.merges_.assign(tableSize(data.merges.size()), MergeEntry{kEmptyKey, 0, 0});
  mask = t.merges_.size() - 1;
  std::string joined;
  for (size_t rank = 0; rank < data.merges.size(); ++rank) {
    int32_t left = data.merges[rank].first, right = data.merges[rank].second;
    if (left < 0 || right < 0 || static_cast<size_t>(left) >= vocabSize ||
        static_cast<size_t>(right) >= vocabSize)
      return fail(error, "tokenizer: merges[" + std::to_string(rank) +
                             "] has an id outside the vocab");
    int32_t newId = -1;
    if (t.pure_[left] && t.pure_[right]) {
      joined.assign(t.vocabBytes(left));
      joined += t.vocabBytes(right);
      newId = t.findVocabBytes(joined);
    } else {
      auto it = impure.find(data.vocab[left] + data.vocab[right]);
      newId = it == impure.end() ? -1 : it->second;
    }
    if (newId < 0)
      return fail(error, "tokenizer: merges[" + std::to_string(rank) +
                             "]: merged token '" + data.vocab[left] +
                             data.vocab[right] + "' not in vocab");
    uint64_t key = pairKey(left, right);
    size_t slot = mix64(key) & mask;
    while (t.merges_[slot].key != kEmptyKey && t.merges_[slot].key != key)
      slot = (slot + 1) & mask;
    t.merges_[slot] = MergeEntry{key, static_cast<int32_t>(rank), newId};
  }

  // Added tokens.
  t.idSpace_ = vocabSize;
  for (const TokenizerData::Added &a : data.added) {
    if (a.id < 0)
      return fail(error, "tokenizer: added token '" + a.content +
                             "' has a negative id");
    if (a.content.empty())
      return fail(error, "tokenizer: added token " + std::to_string(a.id) +
                             " has empty content");
    AddedToken tok;
    tok.content = a.content;
    byteLevelDecode(a.content, &tok.bytes);
    tok.id = a.id;
    tok.special = a.special;
    t.added_.push_back(std::move(tok));
    t.idSpace_ = std::max(t.idSpace_, static_cast<size_t>(a.id) + 1);
  }
  std::sort(t.added_.begin(), t.added_.end(),
            [](const AddedToken &a, const AddedToken &b) {
              if (a.content[0] != b.content[0])
                return static_cast<unsigned char>(a.content[0]) <
                       static_cast<unsigned char>(b.content[0]);
              if (a.content.size() != b.content.size())
                return a.content.size() > b.content.size();
              return a.content < b.content;
            });
  for (size_t i = 0; i < t.added_.size(); ++i) {
    if (i > 0 && t.added_[i].content == t.added_[i - 1].content)
      return fail(error, "tokenizer: added token '" + t.added_[i].content +
                             "' listed twice");
    t.addedById_.emplace_back(t.added_[i].id, static_cast<uint32_t>(i));
  }
  std::sort(t.addedById_.begin(), t.addedById_.end());
  for (size_t i = 1; i < t.addedById_.size(); ++i)
    if (t.addedById_[i].first == t.addedById_[i - 1].first)
      return fail(error, "tokenizer: added token id " +
                             std::to_string(t.addedById_[i].first) +
                             " used twice");
  size_t next = 0;
  for (int b = 0; b <= 256; ++b) {
    while (next < t.added_.size() &&
           static_cast<unsigned char>(t.added_[next].content[0]) < b)
      ++next;
    t.addedStart_[b] = static_cast<uint32_t>(next);
  }

  t.ignoreMerges_ = data.ignore_merges;
  *out = std::move(t);
  return true;
}

const Tokenizer::MergeEntry *Tokenizer::findMerge(int32_t left,
                                                  int32_t right) const {
  uint64_t key = pairKey(left, right);
  size_t mask = merges_.size() - 1;
  for (size_t slot = mix64(key) & mask;; slot = (slot + 1) & mask) {
    const MergeEntry &e = merges_[slot];
    if (e.key == key)
      return &e;
    if (e.key == kEmptyKey)
      return nullptr;
  }
}

int32_t Tokenizer::findVocabBytes(std::string_view bytes) const {
  if (vocabIndex_.empty()) // Default-constructed.
    return -1;
  size_t mask = vocabIndex_.size() - 1;
  for (size_t slot = hashBytes(bytes) & mask;; slot = (slot + 1) & mask) {
    int32_t id = vocabIndex_[slot];
    if (id < 0 || vocabBytes(id) == bytes)
      return id;
  }
}

const Tokenizer::AddedToken *Tokenizer::findAddedById(int32_t id) const {
  auto it = std::lower_bound(addedById_.begin(), addedById_.end(),
                             std::make_pair(id, 0u));
  if (it == addedById_.end() || it->first != id)
    return nullptr;
  return &added_[it->second];
}

std::vector<int32_t> Tokenizer::encode(std::string_view utf8) const {
  std::vector<int32_t> ids;
  encode(utf8, &ids);
  return ids;
}

void Tokenizer::encode(std::string_view text, std::vector<int32_t> *ids) const {
  Scratch s;
  // Split out added tokens: leftmost match, longest first.
  size_t segStart = 0, i = 0, n = text.size();
  while (i < n) {
    auto b = static_cast<unsigned char>(text[i]);
    size_t matched = 0;
    for (uint32_t k = addedStart_[b]; k < addedStart_[b + 1]; ++k) {
      const std::string &c = added_[k].content;
      if (c.size() <= n - i &&
          std::memcmp(text.data() + i, c.data(), c.size()) == 0) {
        encodeSegment(text.substr(segStart, i - segStart), s, ids);
        ids->push_back(added_[k].id);
        matched = c.size();
        break;
      }
    }
    if (matched) {
      i += matched;
      segStart = i;
    } else {
      ++i;
    }
  }
  encodeSegment(text.substr(segStart), s, ids);
}

void Tokenizer::encodeSegment(std::string_view text, Scratch &s,
                              std::vector<int32_t> *ids) const {
  if (text.empty() || vocabIndex_.empty())
    return;
  // Classify characters; an invalid byte is one Other character.
  const auto *bytes = reinterpret_cast<const uint8_t *>(text.data());
  s.offsets.clear();
  s.classes.clear();
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    int len = decodeUtf8(bytes + i, text.size() - i, &cp);
    s.offsets.push_back(static_cast<uint32_t>(i));
    s.classes.push_back(len > 0 ? classOf(cp) : uint8_t{kOther});
    i += len > 0 ? len : 1;
  }
  size_t n = s.classes.size();
  s.offsets.push_back(static_cast<uint32_t>(text.size()));
  const uint32_t *off = s.offsets.data();
  const uint8_t *cls = s.classes.data();

  // ASCII byte of character k, or 0 if it is not a single byte.
  auto ascii = [&](size_t k) -> uint8_t {
    return k < n && off[k + 1] - off[k] == 1 ? bytes[off[k]] : 0;
  };
  auto isLongS = [&](size_t k) { // U+017F folds to 's' under (?i).
    return k < n && off[k + 1] - off[k] == 2 && bytes[off[k]] == 0xC5 &&
           bytes[off[k] + 1] == 0xBF;
  };

  for (size_t i = 0; i < n;) {
    size_t j = i;
    uint8_t c = cls[i];
    if (ascii(i) == '\'') {
      // (?i:'s|'t|'re|'ve|'m|'ll|'d)
      uint8_t c1 = ascii(i + 1) | 0x20, c2 = ascii(i + 2) | 0x20;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd' || isLongS(i + 1))
        j = i + 2;
      else if (((c1 == 'r' || c1 == 'v') && c2 == 'e') ||
               (c1 == 'l' && c2 == 'l'))
        j = i + 3;
    }
    if (j == i && (c == kLetter || ((c == kOther || c == kSpace) && i + 1 < n &&
                                    cls[i + 1] == kLetter))) {
      // [^\r\n\p{L}\p{N}]?\p{L}+
      j = c == kLetter ? i + 1 : i + 2;
      while (j < n && cls[j] == kLetter)
        ++j;
    } else if (j == i && c == kNumber) {
      // \p{N}{1,3}
      j = i + 1;
      while (j < n && j < i + 3 && cls[j] == kNumber)
        ++j;
    } else if (j == i && (c == kOther || (ascii(i) == ' ' && i + 1 < n &&
                                          cls[i + 1] == kOther))) {
      // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
      j = c == kOther ? i + 1 : i + 2;
      while (j < n && cls[j] == kOther)
        ++j;
      while (j < n && cls[j] == kNewline)
        ++j;
    } else if (j == i) {
      // Whitespace run [i, end).
      size_t end = i, lastNewline = n;
      for (; end < n && (cls[end] == kSpace || cls[end] == kNewline); ++end)
        if (cls[end] == kNewline)
          lastNewline = end;
      if (lastNewline != n)
        j = lastNewline + 1; // \s*[\r\n]+
      else if (end == n || end - i < 2)
        j = end; // \s+(?!\S) at the end, or \s+
      else
        j = end - 1; // \s+(?!\S): leave one space for the next word.
    }
    encodeWord(text.substr(off[i], off[j] - off[i]), s, ids);
    i = j;
  }
}

void Tokenizer::encodeWord(std::string_view word, Scratch &s,
                           std::vector<int32_t> *ids) const {
  if (word.size() == 1) {
    int32_t id = byteToId_[static_cast<unsigned char>(word[0])];
    if (id >= 0)
      ids->push_back(id);
    return;
  }
  if (ignoreMerges_) {
    int32_t id = findVocabBytes(word);
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  // One symbol per byte; bytes missing from the vocab are dropped (no unk).
  std::vector<Symbol> &sym = s.symbols;
  sym.clear();
  for (char ch : word) {
    int32_t id = byteToId_[static_cast<unsigned char>(ch)];
    if (id < 0)
      continue;
    int32_t pos = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{id, pos - 1, pos + 1, 1});
  }
  if (sym.empty())
    return;
  sym.back().next = -1;

  std::vector<QueuedMerge> &queue = s.queue;
  queue.clear();
  for (size_t p = 0; p + 1 < sym.size(); ++p)
    if (const MergeEntry *m = findMerge(sym[p].id, sym[p + 1].id))
      queue.push_back(QueuedMerge{m->rank, static_cast<int32_t>(p), m->newId});
  std::make_heap(queue.begin(), queue.end(), mergeAfter);

  auto push = [&](int32_t pos, const MergeEntry *m) {
    queue.push_back(QueuedMerge{m->rank, pos, m->newId});
    std::push_heap(queue.begin(), queue.end(), mergeAfter);
  };
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), mergeAfter);
    QueuedMerge top = queue.back();
    queue.pop_back();
    Symbol &cur = sym[top.pos];
    if (cur.len == 0 || cur.next == -1)
      continue;
    Symbol right = sym[cur.next];
    const MergeEntry *m = findMerge(cur.id, right.id);
    if (!m || m->newId != top.newId)
      continue; // Stale entry.
    sym[cur.next].len = 0;
    cur.id = top.newId;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next != -1)
      sym[right.next].prev = top.pos;
    if (cur.prev >= 0)
      if (const MergeEntry *pm = findMerge(sym[cur.prev].id, cur.id))
        push(cur.prev, pm);
    if (cur.next != -1)
      if (const MergeEntry *nm = findMerge(cur.id, sym[cur.next].id))
        push(top.pos, nm);
  }
  for (const Symbol &x : sym)
    if (x.len != 0)
      ids->push_back(x.id);
}

std::string Tokenizer::decode(const int32_t *ids, size_t n,
                              bool skipSpecial) const {
  std::string raw;
  for (size_t i = 0; i < n; ++i) {
    int32_t id = ids[i];
    if (id < 0 || static_cast<size_t>(id) >= idSpace_)
      continue;
    if (const AddedToken *a = findAddedById(id)) {
      if (!(skipSpecial && a->special))
        raw += a->bytes;
    } else if (static_cast<size_t>(id) < pure_.size()) {
      raw += vocabBytes(id);
    }
  }
  // String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD.
  std::string out;
  out.reserve(raw.size());
  const auto *s = reinterpret_cast<const uint8_t *>(raw.data());
  for (size_t i = 0; i < raw.size();) {
    uint32_t cp;
    int len = decodeUtf8(s + i, raw.size() - i, &cp);
    if (len > 0) {
      out.append(raw, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += -len;
    }
  }
  return out;
}

std::string_view Tokenizer::tokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= idSpace_)
    return {};
  if (const AddedToken *a = findAddedById(id))
    return a->bytes;
  if (static_cast<size_t>(id) < pure_.size())
    return vocabBytes(id);
  return {};
}

int32_t Tokenizer::tokenToId(std::string_view token) const {
  for (const AddedToken &a : added_)
    if (a.content == token)
      return a.id;
  std::string bytes;
  if (byteLevelDecode(token, &bytes)) {
    int32_t id = findVocabBytes(bytes);
    return id >= 0 && pure_[id] ? id : -1;
  }
  // Not in byte-level form: only an impure entry can match, by its text.
  for (size_t id = 0; id < pure_.size(); ++id)
    if (!pure_[id] && vocabBytes(static_cast<int32_t>(id)) == token)
      return static_cast<int32_t>(id);
  return -1;
}

bool Tokenizer::isSpecial(int32_t id) const {
  const AddedToken *a = findAddedById(id);
  return a && a->special;
}

} // namespace tlc
