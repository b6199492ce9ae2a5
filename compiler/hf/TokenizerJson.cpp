//===- TokenizerJson.cpp - Load a Hugging Face tokenizer.json -------------===//
//
// Validating reader for tokenizer.json. Every accepted setting is one the
// runtime Tokenizer reproduces bit for bit against `tokenizers`' encode(text,
// add_special_tokens=False) and decode; the post_processor only matters with
// add_special_tokens=True and is ignored. nlohmann/json is used in no-throw
// mode, so every access is preceded by a type check.
//
//===----------------------------------------------------------------------===//

#include "compiler/hf/TokenizerJson.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

namespace tlc {
namespace {

using Json = nlohmann::json;

/// The only pre-tokenizer regex supported (Llama 3).
constexpr std::string_view kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// Collects the first syntax error of a document, for the error message.
struct ErrorSax {
  std::string message;
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(Json::number_integer_t) { return true; }
  bool number_unsigned(Json::number_unsigned_t) { return true; }
  bool number_float(Json::number_float_t, const std::string &) { return true; }
  bool string(std::string &) { return true; }
  bool binary(Json::binary_t &) { return true; }
  bool start_object(size_t) { return true; }
  bool key(std::string &) { return true; }
  bool end_object() { return true; }
  bool start_array(size_t) { return true; }
  bool end_array() { return true; }
  bool parse_error(size_t, const std::string &,
                   const nlohmann::detail::exception &e) {
    message = e.what();
    return false;
  }
};

class Loader {
public:
  explicit Loader(const std::string &name) : name_(name) {}

  bool load(const Json &root, TokenizerData *out);
  const std::string &error() const { return error_; }

private:
  /// "<name>: <field> <predicate>", e.g. "model.type is 'X', only ...".
  bool fail(const std::string &field, const std::string &predicate) {
    error_ = name_ + ": " + field + " " + predicate;
    return false;
  }
  /// "<name>: <field>: <statement>", e.g. "model.merges[3]: token ...".
  bool failAt(const std::string &field, const std::string &statement) {
    return fail(field + ":", statement);
  }
  static const Json *get(const Json &obj, const char *key) {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  static bool isNull(const Json *v) { return !v || v->is_null(); }
  static std::string quote(const std::string &s) { return "'" + s + "'"; }
  /// Optional boolean field that must equal `want` (null/absent = default).
  bool checkBool(const Json &obj, const char *key, const std::string &field,
                 bool want, bool dflt);
  bool loadModel(const Json &model, TokenizerData *out);
  bool loadMerges(const Json &merges, TokenizerData *out);
  bool loadPreTokenizer(const Json &pt);
  bool loadAdded(const Json &added, TokenizerData *out);

  const std::string &name_;
  std::string error_;
  std::unordered_map<std::string, int32_t> vocabIds_;
};

bool Loader::checkBool(const Json &obj, const char *key,
                       const std::string &field, bool want, bool dflt) {
  const Json *v = get(obj, key);
  if (isNull(v)) {
    if (dflt == want)
      return true;
    return fail(field,
                std::string("missing, must be ") + (want ? "true" : "false"));
  }
  if (!v->is_boolean())
    return fail(field, "must be a boolean");
  if (v->get<bool>() != want)
    return fail(field, std::string("is ") + (want ? "false" : "true") +
                           ", only " + (want ? "true" : "false") +
                           " is supported");
  return true;
}

bool Loader::load(const Json &root, TokenizerData *out) {
  if (!root.is_object())
    return fail("(root)", "not a JSON object");
  for (const char *key : {"truncation", "padding"})
    if (!isNull(get(root, key)))
      return fail(key, "must be null (it would change encode's ids)");
  if (const Json *n = get(root, "normalizer"); !isNull(n)) {
    const Json *type = n->is_object() ? get(*n, "type") : nullptr;
    return fail(
        "normalizer",
        "type " +
            quote(type && type->is_string() ? type->get<std::string>() : "?") +
            " is not supported, only null");
  }
  const Json *pt = get(root, "pre_tokenizer");
  if (isNull(pt))
    return fail("pre_tokenizer", "missing; the Llama 3 Split + ByteLevel "
                                 "sequence is required");
  if (!loadPreTokenizer(*pt))
    return false;
  const Json *dec = get(root, "decoder");
  const Json *decType = dec && dec->is_object() ? get(*dec, "type") : nullptr;
  if (!decType || !decType->is_string() ||
      decType->get<std::string>() != "ByteLevel")
    return fail("decoder.type",
                (decType && decType->is_string()
                     ? "is " + quote(decType->get<std::string>())
                     : std::string("missing")) +
                    ", only 'ByteLevel' is supported");
  const Json *model = get(root, "model");
  if (!model || !model->is_object())
    return fail("model", "missing or not an object");
  if (!loadModel(*model, out))
    return false;
  if (const Json *added = get(root, "added_tokens"); !isNull(added))
    return loadAdded(*added, out);
  return true;
}

bool Loader::loadPreTokenizer(const Json &pt) {
  auto typeOf = [](const Json &v) -> std::string {
    const Json *t = v.is_object() ? get(v, "type") : nullptr;
    return t && t->is_string() ? t->get<std::string>() : "";
  };
  const std::string expected =
      "[Split(Llama 3 regex, Isolated), ByteLevel(use_regex=false)]";
  if (typeOf(pt) != "Sequence")
    return fail("pre_tokenizer.type", "is " + quote(typeOf(pt)) +
                                          ", only Sequence" + expected +
                                          " is supported");
  const Json *list = get(pt, "pretokenizers");
  if (!list || !list->is_array() || list->size() != 2 ||
      typeOf((*list)[0]) != "Split" || typeOf((*list)[1]) != "ByteLevel")
    return fail("pre_tokenizer.pretokenizers", "must be " + expected);

  const Json &split = (*list)[0];
  const std::string sf = "pre_tokenizer.pretokenizers[0]";
  const Json *pattern = get(split, "pattern");
  const Json *regex =
      pattern && pattern->is_object() ? get(*pattern, "Regex") : nullptr;
  if (!regex || !regex->is_string())
    return fail(sf + ".pattern", "must be {\"Regex\": ...}");
  if (regex->get<std::string>() != kLlama3Regex)
    return failAt(sf + ".pattern.Regex",
                  "unsupported regex " + quote(regex->get<std::string>()) +
                      "; only the Llama 3 pattern is supported");
  const Json *behavior = get(split, "behavior");
  if (!behavior || !behavior->is_string() ||
      behavior->get<std::string>() != "Isolated")
    return fail(sf + ".behavior", "must be 'Isolated'");
  if (!checkBool(split, "invert", sf + ".invert", false, false))
    return false;

  const Json &bl = (*list)[1];
  const std::string bf = "pre_tokenizer.pretokenizers[1]";
  return checkBool(bl, "use_regex", bf + ".use_regex", false, true) &&
         checkBool(bl, "add_prefix_space", bf + ".add_prefix_space", false,
                   true);
}

bool Loader::loadModel(const Json &model, TokenizerData *out) {
  const Json *type = get(model, "type");
  if (!type || !type->is_string())
    return fail("model.type", "missing, only 'BPE' is supported");
  if (type->get<std::string>() != "BPE")
    return fail("model.type", "is " + quote(type->get<std::string>()) +
                                  ", only 'BPE' is supported");
  if (const Json *d = get(model, "dropout");
      !isNull(d) && !(d->is_number() && d->get<double>() == 0.0))
    return fail("model.dropout", "must be null (dropout is random)");
  for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json *v = get(model, key);
    if (!isNull(v) && !(v->is_string() && v->get<std::string>().empty()))
      return fail(std::string("model.") + key, "must be null");
  }
  if (!checkBool(model, "byte_fallback", "model.byte_fallback", false, false))
    return false;
  const Json *ignore = get(model, "ignore_merges");
  if (!isNull(ignore) && !ignore->is_boolean())
    return fail("model.ignore_merges", "must be a boolean");
  out->ignore_merges = !isNull(ignore) && ignore->get<bool>();

  // Vocab: token -> id with ids dense in 0..N-1.
  const Json *vocab = get(model, "vocab");
  if (!vocab || !vocab->is_object())
    return fail("model.vocab", "missing or not an object");
  size_t n = vocab->size();
  out->vocab.assign(n, std::string());
  std::vector<bool> seen(n, false);
  vocabIds_.reserve(n);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::string field = "model.vocab[" + quote(it.key()) + "]";
    if (!it->is_number_unsigned() && !it->is_number_integer())
      return failAt(field, "id must be an integer");
    int64_t id = it->is_number_unsigned()
                     ? static_cast<int64_t>(
                           std::min<uint64_t>(it->get<uint64_t>(), INT64_MAX))
                     : it->get<int64_t>();
    if (id < 0 || static_cast<uint64_t>(id) >= n)
      return failAt(field, "id " + std::to_string(id) + " outside 0.." +
                               std::to_string(n - 1) +
                               " (vocab ids must be dense)");
    if (seen[id])
      return failAt(field, "id " + std::to_string(id) + " also used by " +
                               quote(out->vocab[id]));
    seen[id] = true;
    out->vocab[id] = it.key();
    vocabIds_.emplace(it.key(), static_cast<int32_t>(id));
  }

  // unk_token is only accepted when it can never be used: every byte-level
  // character is in the vocab.
  if (const Json *unk = get(model, "unk_token"); !isNull(unk)) {
    static const char *const kHex = "0123456789abcdef";
    for (uint32_t cp = 0x21; cp < 0x144; ++cp) {
      bool inAlphabet = cp <= 0x7E || (cp >= 0xA1 && cp <= 0xAC) ||
                        (cp >= 0xAE && cp <= 0xFF) || cp >= 0x100;
      if (!inAlphabet)
        continue;
      std::string ch;
      if (cp < 0x80) {
        ch += static_cast<char>(cp);
      } else {
        ch += static_cast<char>(0xC0 | (cp >> 6));
        ch += static_cast<char>(0x80 | (cp & 0x3F));
      }
      if (!vocabIds_.count(ch))
        return fail("model.unk_token",
                    std::string("is only supported when every byte-level "
                                "character is in the vocab; U+0") +
                        kHex[cp >> 8] + kHex[(cp >> 4) & 15] + kHex[cp & 15] +
                        " is missing");
    }
  }

  const Json *merges = get(model, "merges");
  if (!merges || !merges->is_array())
    return fail("model.merges", "missing or not an array");
  return loadMerges(*merges, out);
}

bool Loader::loadMerges(const Json &merges, TokenizerData *out) {
  out->merges.reserve(merges.size());
  std::string left, right;
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json &m = merges[i];
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    if (m.is_string()) {
      // Legacy "left right" form; "#version" lines are skipped.
      const std::string &s = m.get_ref<const std::string &>();
      if (s.rfind("#version", 0) == 0)
        continue;
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != s.npos)
        return failAt(field, quote(s) + " is not two tokens separated by one "
                                        "space");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() &&
               m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return fail(field, "must be \"left right\" or [\"left\", \"right\"]");
    }
    auto l = vocabIds_.find(left), r = vocabIds_.find(right);
    if (l == vocabIds_.end() || r == vocabIds_.end())
      return failAt(field, "token " +
                               quote(l == vocabIds_.end() ? left : right) +
                               " not in vocab");
    if (!vocabIds_.count(left + right))
      return failAt(field,
                    "merged token " + quote(left + right) + " not in vocab");
    out->merges.emplace_back(l->second, r->second);
  }
  return true;
}

/// True if a match of `a` and one of `b` can overlap in some text.
bool canOverlap(const std::string &a, const std::string &b) {
  if (a.find(b) != a.npos || b.find(a) != b.npos)
    return true;
  size_t m = std::min(a.size(), b.size());
  for (size_t k = 1; k < m; ++k)
    if (a.compare(a.size() - k, k, b, 0, k) == 0 ||
        b.compare(b.size() - k, k, a, 0, k) == 0)
      return true;
  return false;
}

bool Loader::loadAdded(const Json &added, TokenizerData *out) {
  if (!added.is_array())
    return fail("added_tokens", "not an array");
  std::unordered_set<std::string> contents;
  std::unordered_set<int64_t> ids;
  std::vector<std::pair<std::string, size_t>> normalized, raw;
  for (size_t i = 0; i < added.size(); ++i) {
    const Json &a = added[i];
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    if (!a.is_object())
      return fail(field, "not an object");
    const Json *id = get(a, "id");
    const Json *content = get(a, "content");
    if (!id || !(id->is_number_unsigned() || id->is_number_integer()) ||
        id->get<int64_t>() < 0 || id->get<int64_t>() >= INT32_MAX)
      return fail(field + ".id", "must be an integer in 0..2^31-2");
    if (!content || !content->is_string() ||
        content->get_ref<const std::string &>().empty())
      return fail(field + ".content", "must be a non-empty string");
    const std::string &text = content->get_ref<const std::string &>();
    if (!contents.insert(text).second)
      return failAt(field + ".content", quote(text) + " listed twice");
    if (!ids.insert(id->get<int64_t>()).second)
      return failAt(field + ".id", std::to_string(id->get<int64_t>()) +
                                       " used by two added tokens");
    for (const char *key : {"single_word", "lstrip", "rstrip"})
      if (!checkBool(a, key, field + "." + key, false, false))
        return false;
    const Json *special = get(a, "special");
    if (!isNull(special) && !special->is_boolean())
      return fail(field + ".special", "must be a boolean");
    bool isSpecial = !isNull(special) && special->get<bool>();
    const Json *norm = get(a, "normalized");
    if (!isNull(norm) && !norm->is_boolean())
      return fail(field + ".normalized", "must be a boolean");
    bool isNormalized = isNull(norm) ? !isSpecial : norm->get<bool>();
    (isNormalized ? normalized : raw).emplace_back(text, i);
    out->added.push_back(TokenizerData::Added{
        static_cast<int32_t>(id->get<int64_t>()), text, isSpecial});
  }
  // tokenizers matches non-normalized tokens first, then normalized ones in
  // the gaps; the runtime does one pass, which agrees unless they overlap.
  for (const auto &n : normalized)
    for (const auto &r : raw)
      if (canOverlap(n.first, r.first))
        return failAt("added_tokens[" + std::to_string(n.second) + "]",
                      "normalized token " + quote(n.first) +
                          " overlaps non-normalized token " + quote(r.first) +
                          " (added_tokens[" + std::to_string(r.second) +
                          "]); not supported");
  return true;
}

} // namespace

bool parseTokenizerJson(std::string_view text, const std::string &name,
                        TokenizerData *out, std::string *error) {
  Json root = Json::parse(text.begin(), text.end(), nullptr,
                          /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    ErrorSax sax;
    Json::sax_parse(text.begin(), text.end(), &sax);
    if (error)
      *error = name + ": invalid JSON: " + sax.message;
    return false;
  }
  TokenizerData data;
  Loader loader(name);
  if (!loader.load(root, &data)) {
    if (error)
      *error = loader.error();
    return false;
  }
  *out = std::move(data);
  return true;
}

bool loadTokenizerJson(const std::string &path, TokenizerData *out,
                       std::string *error) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) {
    if (error)
      *error = path + ": cannot open file";
    return false;
  }
  std::string text;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0)
    text.append(buf, got);
  bool readError = std::ferror(f) != 0;
  std::fclose(f);
  if (readError) {
    if (error)
      *error = path + ": read error";
    return false;
  }
  return parseTokenizerJson(text, path, out, error);
}

} // namespace tlc
