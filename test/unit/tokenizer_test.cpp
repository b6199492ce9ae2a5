//===- tokenizer_test.cpp - Unit tests for the BPE tokenizer --------------===//
//
// Tests the runtime Tokenizer on a tiny hand-built vocabulary (merge order,
// ignore_merges, added-token matching, decode of broken UTF-8, invalid input)
// and, when the Llama 3 tokenizer.json is available, on exact ids produced by
// Hugging Face `tokenizers` 0.23. Also checks that malformed tokenizer.json
// files are rejected with a message naming the file and the field. The Llama
// 3 file is found via $TLC_LLAMA3_TOKENIZER or TLC_LLAMA3_TOKENIZER_PATH
// (either plain or gzip'd; read with zlib); those tests skip without it.
//
//===----------------------------------------------------------------------===//

#include "compiler/hf/TokenizerJson.h"
#include "runtime/src/tokenizer/Tokenizer.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>
#include <vector>

using tlc::Tokenizer;
using tlc::TokenizerData;
using Ids = std::vector<int32_t>;

namespace {

/// GPT-2 byte-level form of one byte, UTF-8 encoded.
std::string byteChar(unsigned b) {
  unsigned cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
    unsigned n = 0;
    for (unsigned x = 0; x < b; ++x)
      if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE))
        ++n;
    cp = 0x100 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

/// Byte tokens 0..255 (id = byte value), then `extra` tokens, with merges.
class TinyTokenizer : public ::testing::Test {
protected:
  int32_t add(const std::string &text) {
    data.vocab.push_back(text);
    return static_cast<int32_t>(data.vocab.size() - 1);
  }
  int32_t id(const std::string &text) {
    for (size_t i = 0; i < data.vocab.size(); ++i)
      if (data.vocab[i] == text)
        return static_cast<int32_t>(i);
    return -1;
  }
  void merge(const std::string &l, const std::string &r) {
    data.merges.emplace_back(id(l), id(r));
  }
  void SetUp() override {
    for (unsigned b = 0; b < 256; ++b)
      add(byteChar(b));
  }
  Tokenizer build() {
    Tokenizer t;
    std::string error;
    EXPECT_TRUE(Tokenizer::create(data, &t, &error)) << error;
    return t;
  }
  TokenizerData data;
};

TEST_F(TinyTokenizer, MergesByRankThenLeftmost) {
  add("bc");
  add("ab");
  add("abc");
  add("aa");
  merge("b", "c");  // rank 0
  merge("a", "b");  // rank 1
  merge("a", "bc"); // rank 2
  merge("a", "a");  // rank 3
  Tokenizer t = build();
  EXPECT_EQ(t.encode("abc"), (Ids{id("abc")})); // bc first, then a+bc.
  EXPECT_EQ(t.encode("abd"), (Ids{id("ab"), 'd'}));
  EXPECT_EQ(t.encode("aaa"), (Ids{id("aa"), 'a'})); // Leftmost pair first.
  EXPECT_EQ(t.encode("aaaa"), (Ids{id("aa"), id("aa")}));
}

TEST_F(TinyTokenizer, IgnoreMerges) {
  int32_t xyz = add("xyz");
  Tokenizer t = build();
  EXPECT_EQ(t.encode("xyz"), (Ids{'x', 'y', 'z'}));
  data.ignore_merges = true;
  Tokenizer u = build();
  EXPECT_EQ(u.encode("xyz"), (Ids{xyz}));
  EXPECT_EQ(u.encode("xyzw"), (Ids{'x', 'y', 'z', 'w'}));
}

TEST_F(TinyTokenizer, PreTokenizerSplitsBeforeMerging) {
  add(byteChar(' ') + "a");
  add("a" + byteChar(' '));
  merge(byteChar(' '), "a");
  merge("a", byteChar(' '));
  Tokenizer t = build();
  // " a a" splits into " a", " a": the merge "a " never applies.
  int32_t spaceA = id(byteChar(' ') + "a");
  EXPECT_EQ(t.encode(" a a"), (Ids{spaceA, spaceA}));
  // "a  " -> "a", "  " (trailing whitespace stays one piece).
  EXPECT_EQ(t.encode("a  "), (Ids{'a', ' ', ' '}));
}

TEST_F(TinyTokenizer, AddedTokensLeftmostLongest) {
  int32_t ab = static_cast<int32_t>(data.vocab.size()) + 10; // Beyond vocab.
  data.added = {
      {ab, "ab", false}, {ab + 1, "abc", true}, {ab + 2, "bcd", true}};
  Tokenizer t = build();
  EXPECT_EQ(t.encode("abcd"), (Ids{ab + 1, 'd'}));
  EXPECT_EQ(t.encode("xabx"), (Ids{'x', ab, 'x'}));
  EXPECT_EQ(t.encode("xbcdab"), (Ids{'x', ab + 2, ab}));
  EXPECT_EQ(t.idSpaceSize(), static_cast<size_t>(ab + 3));
  EXPECT_EQ(t.decode(Ids{ab + 1, 'd', ab}), "abcdab");
  EXPECT_EQ(t.decode(Ids{ab + 1, 'd', ab}, /*skipSpecial=*/true), "dab");
  EXPECT_TRUE(t.isSpecial(ab + 1));
  EXPECT_FALSE(t.isSpecial(ab));
  EXPECT_EQ(t.tokenToId("abc"), ab + 1);
  EXPECT_EQ(t.tokenToId(byteChar(' ')), ' ');
}

TEST_F(TinyTokenizer, DecodeIsLossyLikeTokenizers) {
  Tokenizer t = build();
  // Unknown ids are skipped; broken sequences become U+FFFD per maximal
  // invalid subpart.
  EXPECT_EQ(t.decode(Ids{'h', -1, 100000, 'i'}), "hi");
  EXPECT_EQ(t.decode(Ids{0xE2, 0x82, 'x'}), "\xEF\xBF\xBDx");
  EXPECT_EQ(t.decode(Ids{0xFF, 0xC3, 0xA9}), "\xEF\xBF\xBD\xC3\xA9");
  EXPECT_EQ(t.decode(Ids{0xF0, 0x9F, 0x98}), "\xEF\xBF\xBD");
  EXPECT_EQ(t.tokenBytes(0xE2), "\xE2");
}

TEST_F(TinyTokenizer, InvalidUtf8DoesNotCrash) {
  Tokenizer t = build();
  std::string bad = "a\xFF\xC3(\xE2\x82 \xF0\x9F\x98\x80\xED\xA0\x80z";
  Ids ids = t.encode(bad);
  EXPECT_EQ(ids.size(), bad.size()); // Byte tokens only.
  std::string raw;
  for (int32_t i : ids)
    raw += t.tokenBytes(i);
  EXPECT_EQ(raw, bad);
  std::string ok = "a\xC3\xA9 \xF0\x9F\x98\x80!";
  EXPECT_EQ(t.decode(t.encode(ok)), ok);
  EXPECT_TRUE(t.encode("").empty());
}

TEST_F(TinyTokenizer, TokensOutsideByteLevelAlphabet) {
  // A vocab entry with a character outside the byte-level alphabet decodes to
  // its own text (the ByteLevel decoder's fallback).
  int32_t odd = add("a b");
  add("a b" + byteChar('c'));
  merge("a b", byteChar('c'));
  Tokenizer t = build();
  EXPECT_EQ(t.decode(Ids{'x', odd}), "xa b");
  EXPECT_EQ(t.tokenToId("a b"), odd);
  EXPECT_EQ(t.encode("a b"), (Ids{'a', ' ', 'b'}));
}

TEST_F(TinyTokenizer, CreateRejectsBadData) {
  Tokenizer t;
  std::string error;
  data.merges.emplace_back('x', 'y'); // "xy" is not in the vocab.
  EXPECT_FALSE(Tokenizer::create(data, &t, &error));
  EXPECT_NE(error.find("merges[0]"), std::string::npos) << error;
  data.merges.clear();
  data.added = {{300, "<a>", true}, {300, "<b>", true}};
  EXPECT_FALSE(Tokenizer::create(data, &t, &error));
  EXPECT_NE(error.find("300"), std::string::npos) << error;
}

// --- Llama 3 -------------------------------------------------------------

std::string llama3Path() {
  if (const char *env = std::getenv("TLC_LLAMA3_TOKENIZER"))
    return env;
#ifdef TLC_LLAMA3_TOKENIZER_PATH
  return TLC_LLAMA3_TOKENIZER_PATH;
#else
  return "";
#endif
}

/// Loads the Llama 3 tokenizer once (gunzipping to a temp file if needed).
const Tokenizer *llama3() {
  static Tokenizer tok;
  static int state = 0; // 0 = not tried, 1 = ok, 2 = unavailable.
  if (state)
    return state == 1 ? &tok : nullptr;
  state = 2;
  std::string path = llama3Path();
  gzFile in = path.empty() ? nullptr : gzopen(path.c_str(), "rb");
  if (!in)
    return nullptr;
  std::string json;
  char buf[1 << 16];
  int got;
  while ((got = gzread(in, buf, sizeof(buf))) > 0)
    json.append(buf, got);
  gzclose(in);
  TokenizerData data;
  std::string error;
  if (!tlc::parseTokenizerJson(json, path, &data, &error) ||
      !Tokenizer::create(data, &tok, &error)) {
    ADD_FAILURE() << error;
    return nullptr;
  }
  state = 1;
  return &tok;
}

#define REQUIRE_LLAMA3()                                                       \
  const Tokenizer *tok = llama3();                                             \
  if (!tok)                                                                    \
  GTEST_SKIP() << "Llama 3 tokenizer.json not found; set TLC_LLAMA3_TOKENIZER"

TEST(Llama3Tokenizer, MatchesHuggingFace) {
  REQUIRE_LLAMA3();
  // Expected ids from tokenizers 0.23: encode(text, add_special_tokens=False).
  EXPECT_EQ(tok->encode("Hello world"), (Ids{9906, 1917}));
  EXPECT_EQ(tok->encode("I'M here, they'Re ok"),
            (Ids{40, 28703, 1618, 11, 814, 50527, 5509}));
  EXPECT_EQ(tok->encode("<|begin_of_text|>Hi<|eot_id|>"),
            (Ids{128000, 13347, 128009}));
  EXPECT_EQ(tok->encode("  12345  \n\n"), (Ids{220, 220, 4513, 1774, 19124}));
  EXPECT_EQ(tok->encode("你好，世界"), (Ids{57668, 53901, 3922, 102616}));
  EXPECT_EQ(tok->encode("👍🏽 ok"),
            (Ids{9468, 239, 235, 9468, 237, 121, 5509}));
  EXPECT_EQ(tok->encode(" \t\r\n x"), (Ids{220, 4574, 865}));
  EXPECT_EQ(tok->encode("ſ"), (Ids{129, 123}));
}

TEST(Llama3Tokenizer, Decode) {
  REQUIRE_LLAMA3();
  EXPECT_EQ(tok->decode(Ids{128000, 9906, 1917, 128009}),
            "<|begin_of_text|>Hello world<|eot_id|>");
  EXPECT_EQ(tok->decode(Ids{128000, 9906, 1917, 128009}, true), "Hello world");
  EXPECT_EQ(tok->decode(Ids{9906, 9468, 1917}), "Hello\xEF\xBF\xBD world");
  std::string text = "Ünïcödé\tmixed 🇺🇸 text\r\n<|eot_id|> 3.14159";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
}

// --- tokenizer.json validation -------------------------------------------

class TokenizerJsonTest : public ::testing::Test {
protected:
  /// Writes `json` to a temp file and loads it; returns the error ("" if ok).
  std::string load(const std::string &json) {
    char path[] = "/tmp/tlc_tokenizer_test_XXXXXX";
    int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(write(fd, json.data(), json.size()),
              static_cast<ssize_t>(json.size()));
    close(fd);
    std::string error;
    TokenizerData data;
    bool ok = tlc::loadTokenizerJson(path, &data, &error);
    EXPECT_EQ(ok, error.empty());
    if (ok)
      loaded = data;
    else
      EXPECT_EQ(error.rfind(path, 0), 0u) << "error must name the file";
    unlink(path);
    return error;
  }
  /// A small valid tokenizer.json with `model` and `added` spliced in.
  static std::string doc(const std::string &model = kModel,
                         const std::string &extra = "") {
    return R"({"version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [{"id": 5, "content": "<|eot_id|>", "single_word": false,
        "lstrip": false, "rstrip": false, "normalized": false,
        "special": true}],
      "normalizer": null,
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": )" +
           std::string(kRegex) + R"(}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
         "use_regex": false}]},
      "post_processor": null, "decoder": {"type": "ByteLevel"},
      "model": )" +
           model + extra + "}";
  }
  static constexpr const char *kRegex =
      R"("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|)"
      R"(\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|)"
      R"(\\s+(?!\\S)|\\s+")";
  static constexpr const char *kModel =
      R"({"type": "BPE", "dropout": null, "unk_token": null,
      "continuing_subword_prefix": null, "end_of_word_suffix": null,
      "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
      "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
      "merges": [["a", "b"], "Ġ ab"]})";
  TokenizerData loaded;
};

TEST_F(TokenizerJsonTest, LoadsValidFile) {
  ASSERT_EQ(load(doc()), "");
  EXPECT_EQ(loaded.vocab,
            (std::vector<std::string>{"a", "b", "ab", "Ġ", "Ġab"}));
  ASSERT_EQ(loaded.merges.size(), 2u);
  EXPECT_EQ(loaded.merges[1], (std::pair<int32_t, int32_t>{3, 2}));
  EXPECT_TRUE(loaded.ignore_merges);
  ASSERT_EQ(loaded.added.size(), 1u);
  EXPECT_EQ(loaded.added[0].id, 5);
  EXPECT_TRUE(loaded.added[0].special);
  Tokenizer t;
  std::string error;
  ASSERT_TRUE(Tokenizer::create(loaded, &t, &error)) << error;
  EXPECT_EQ(t.encode("ab ab<|eot_id|>"), (Ids{2, 4, 5}));
}

TEST_F(TokenizerJsonTest, RejectsMalformedFiles) {
  auto expectError = [&](const std::string &json, const std::string &part) {
    std::string error = load(json);
    EXPECT_NE(error.find(part), std::string::npos)
        << "expected '" << part << "' in: " << error;
  };
  expectError("{\"model\": ", "invalid JSON");
  expectError("[1, 2]", "not a JSON object");
  std::string model = kModel;
  auto with = [&](const std::string &from, const std::string &to) {
    std::string m = model;
    size_t at = m.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return doc(m.replace(at, from.size(), to));
  };
  expectError(with("\"type\": \"BPE\"", "\"type\": \"WordPiece\""),
              "model.type is 'WordPiece', only 'BPE' is supported");
  expectError(with("\"Ġ ab\"", "\"Ġ xyz\""),
              "model.merges[1]: token 'xyz' not in vocab");
  expectError(with("[\"a\", \"b\"]", "[\"b\", \"a\"]"),
              "model.merges[0]: merged token 'ba' not in vocab");
  expectError(with("\"Ġ ab\"", "\"Ġab\""), "model.merges[1]: 'Ġab' is not two");
  expectError(with("\"Ġab\": 4", "\"Ġab\": 7"), "model.vocab['Ġab']: id 7");
  expectError(with("\"dropout\": null", "\"dropout\": 0.1"), "model.dropout");
  expectError(with("\"byte_fallback\": false", "\"byte_fallback\": true"),
              "model.byte_fallback");
  expectError(with("\"unk_token\": null", "\"unk_token\": \"a\""),
              "model.unk_token");

  std::string full = doc();
  auto edit = [&](const std::string &from, const std::string &to) {
    std::string d = full;
    size_t at = d.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return d.replace(at, from.size(), to);
  };
  expectError(
      edit("\\\\p{N}{1,3}", "\\\\p{N}"),
      "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported regex");
  expectError(edit("\"use_regex\": false", "\"use_regex\": true"),
              "pre_tokenizer.pretokenizers[1].use_regex is true");
  expectError(
      edit("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}"),
      "normalizer type 'NFC'");
  expectError(edit("\"decoder\": {\"type\": \"ByteLevel\"}",
                   "\"decoder\": {\"type\": \"Metaspace\"}"),
              "decoder.type is 'Metaspace'");
  expectError(edit("\"truncation\": null", "\"truncation\": {}"),
              "truncation must be null");
  expectError(edit("\"lstrip\": false", "\"lstrip\": true"),
              "added_tokens[0].lstrip is true");
  expectError(edit("\"id\": 5", "\"id\": -1"), "added_tokens[0].id");
}

TEST_F(TokenizerJsonTest, MissingFile) {
  std::string error;
  TokenizerData data;
  EXPECT_FALSE(
      tlc::loadTokenizerJson("/nonexistent/tokenizer.json", &data, &error));
  EXPECT_EQ(error, "/nonexistent/tokenizer.json: cannot open file");
}

} // namespace
