//===- tokenizer_cli.cpp - Drive the runtime tokenizer from files ---------===//
//
// Test driver for test/e2e/tokenizer_compare.py. Loads a tokenizer.json with
// the compiler's loader, builds the runtime Tokenizer and processes a file of
// records. Records are lines ('\n'-separated, no trailing newline kept) or,
// with -0, NUL-separated so texts may contain newlines.
//
//   tokenizer_cli [-0] TOKENIZER_JSON TEXTS            ids of each text, one
//                                                      line of space-separated
//                                                      ids per record
//   tokenizer_cli [-0] --roundtrip TOKENIZER_JSON TEXTS  check
//                                                      decode(encode(x)) == x
//   tokenizer_cli [-0] --decode TOKENIZER_JSON IDS     records are space-
//                                                      separated ids; prints
//                                                      each decoded text as
//                                                      one line of hex bytes
//   tokenizer_cli [-0] --bench TOKENIZER_JSON TEXTS    encode speed in MB/s
//
//===----------------------------------------------------------------------===//

#include "compiler/hf/TokenizerJson.h"
#include "runtime/src/tokenizer/Tokenizer.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

bool readFile(const char *path, std::string *out) {
  std::FILE *f = std::fopen(path, "rb");
  if (!f)
    return false;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0)
    out->append(buf, got);
  std::fclose(f);
  return true;
}

std::vector<std::string_view> splitRecords(std::string_view text, char sep) {
  std::vector<std::string_view> records;
  if (text.empty())
    return records;
  if (sep == '\n' && text.back() == '\n')
    text.remove_suffix(1); // A final newline ends the last line.
  size_t start = 0;
  while (true) {
    size_t end = text.find(sep, start);
    if (end == text.npos) {
      records.push_back(text.substr(start));
      break;
    }
    records.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return records;
}

int usage() {
  std::fprintf(stderr,
               "usage: tokenizer_cli [-0] [--roundtrip|--decode|--bench]"
               " TOKENIZER_JSON FILE\n");
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  char sep = '\n';
  std::string mode = "encode";
  std::vector<const char *> paths;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "-0"))
      sep = '\0';
    else if (!std::strcmp(argv[i], "--roundtrip"))
      mode = "roundtrip";
    else if (!std::strcmp(argv[i], "--decode"))
      mode = "decode";
    else if (!std::strcmp(argv[i], "--bench"))
      mode = "bench";
    else if (argv[i][0] == '-' && argv[i][1])
      return usage();
    else
      paths.push_back(argv[i]);
  }
  if (paths.size() != 2)
    return usage();

  tlc::TokenizerData data;
  std::string error;
  tlc::Tokenizer tok;
  if (!tlc::loadTokenizerJson(paths[0], &data, &error) ||
      !tlc::Tokenizer::create(data, &tok, &error)) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  std::string input;
  if (!readFile(paths[1], &input)) {
    std::fprintf(stderr, "error: cannot read %s\n", paths[1]);
    return 1;
  }
  std::vector<std::string_view> records = splitRecords(input, sep);

  if (mode == "encode") {
    std::string line;
    std::vector<int32_t> ids;
    for (std::string_view r : records) {
      ids.clear();
      tok.encode(r, &ids);
      line.clear();
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i)
          line += ' ';
        line += std::to_string(ids[i]);
      }
      line += '\n';
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
    return 0;
  }
  if (mode == "decode") {
    std::vector<int32_t> ids;
    for (std::string_view r : records) {
      ids.clear();
      std::string rec(r);
      for (char *p = rec.data(), *end; *p; p = end) {
        long v = std::strtol(p, &end, 10);
        if (end == p)
          break;
        ids.push_back(static_cast<int32_t>(v));
      }
      static const char *const kHex = "0123456789abcdef";
      std::string hex;
      for (unsigned char c : tok.decode(ids)) {
        hex += kHex[c >> 4];
        hex += kHex[c & 15];
      }
      hex += '\n';
      std::fwrite(hex.data(), 1, hex.size(), stdout);
    }
    return 0;
  }
  if (mode == "roundtrip") {
    size_t failures = 0;
    for (size_t i = 0; i < records.size(); ++i) {
      if (tok.decode(tok.encode(records[i])) != records[i] && failures++ < 5)
        std::fprintf(stderr, "roundtrip mismatch in record %zu\n", i);
    }
    std::printf("roundtrip: %zu records, %zu mismatches\n", records.size(),
                failures);
    return failures ? 1 : 0;
  }
  // bench: encode everything repeatedly for at least a second.
  size_t bytes = 0, tokens = 0, rounds = 0;
  std::vector<int32_t> ids;
  auto start = std::chrono::steady_clock::now();
  double seconds = 0;
  do {
    for (std::string_view r : records) {
      ids.clear();
      tok.encode(r, &ids);
      bytes += r.size();
      tokens += ids.size();
    }
    ++rounds;
    seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
  } while (seconds < 1.0);
  std::printf("bench: %zu rounds, %.2f MB, %zu tokens in %.3f s: %.1f MB/s, "
              "%.2f Mtok/s\n",
              rounds, bytes / 1e6, tokens, seconds, bytes / 1e6 / seconds,
              tokens / 1e6 / seconds);
  return 0;
}
