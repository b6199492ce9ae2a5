// Tests for TrainData and AdapterIO. Plain main(); exits non-zero on failure.
// Optional argv[1]: folder of train_order.py (default: next to this file).
#include "runtime/train/AdapterIO.h"
#include "runtime/train/TrainData.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace tlc::train;

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
      ++failures;                                                              \
    }                                                                          \
  } while (0)
// Expects `ok` false and `err` to contain every string in `parts`.
#define CHECK_ERR(ok, err, ...)                                                \
  do {                                                                         \
    bool ok_ = (ok);                                                           \
    if (ok_) {                                                                 \
      fprintf(stderr, "FAIL %s:%d: expected an error\n", __FILE__, __LINE__);  \
      ++failures;                                                              \
    } else {                                                                   \
      for (const char *p : {__VA_ARGS__})                                      \
        if ((err).find(p) == std::string::npos) {                              \
          fprintf(stderr, "FAIL %s:%d: error '%s' lacks '%s'\n", __FILE__,     \
                  __LINE__, (err).c_str(), p);                                 \
          ++failures;                                                          \
        }                                                                      \
    }                                                                          \
  } while (0)

static std::string tmpDir;

static std::string put(const std::string &name, const std::string &bytes) {
  std::string path = tmpDir + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

static std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

static std::string npy(const std::string &descr, const std::string &shape,
                       const void *data, size_t bytes, bool fortran = false) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': " +
                  (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
  size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += (char)(h.size() & 0xff);
  out += (char)(h.size() >> 8);
  out += h;
  out.append((const char *)data, bytes);
  return out;
}

// One token per byte.
static bool byteTokenizer(const std::string &text, std::vector<int32_t> *ids,
                          std::string *) {
  for (unsigned char c : text)
    ids->push_back(c);
  return true;
}

static std::string runCommand(const std::string &cmd, int *status) {
  std::string out;
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  *status = pclose(p);
  return out;
}

static void testNpy() {
  std::string err;
  TrainData d;
  int32_t a[3][4] = {{5, 6, 7, 8}, {9, 10, 11, 12}, {0, 1, 2, 2147483647}};
  std::string p = put("a.npy", npy("<i4", "(3, 4)", a, sizeof a));
  CHECK(d.load(p, 4, nullptr, -1, -1, &err));
  CHECK(d.size() == 3);
  TrainExample e = d.example(1);
  CHECK((e.ids == std::vector<int32_t>{9, 10, 11, 12}));
  CHECK((e.labels == std::vector<int32_t>{10, 11, 12, -100}));
  CHECK(d.example(2).ids[3] == 2147483647);

  int64_t b[2][2] = {{1, 2}, {3, 4}};
  p = put("b.npy", npy("<i8", "(2, 2)", b, sizeof b));
  CHECK(d.load(p, 2, nullptr, -1, -1, &err));
  CHECK(d.size() == 2 && d.example(1).ids[1] == 4 &&
        d.example(1).labels[0] == 4 && d.example(1).labels[1] == -100);

  int64_t big[1][2] = {{1, 1ll << 31}};
  p = put("big.npy", npy("<i8", "(1, 2)", big, sizeof big));
  CHECK_ERR(d.load(p, 2, nullptr, -1, -1, &err), err, "big.npy",
            "2147483648", "[0][1]");
  CHECK(d.size() == 0);
  int32_t neg[1][2] = {{1, -3}};
  p = put("neg.npy", npy("<i4", "(1, 2)", neg, sizeof neg));
  CHECK_ERR(d.load(p, 2, nullptr, -1, -1, &err), err, "neg.npy", "-3");

  p = put("a.npy", npy("<i4", "(3, 4)", a, sizeof a));
  CHECK_ERR(d.load(p, 5, nullptr, -1, -1, &err), err, "a.npy", "shape",
            "sequence length is 5");
  p = put("f.npy", npy("<i4", "(3, 4)", a, sizeof a, true));
  CHECK_ERR(d.load(p, 4, nullptr, -1, -1, &err), err, "f.npy",
            "fortran_order");
  p = put("one.npy", npy("<i4", "(12,)", a, sizeof a));
  CHECK_ERR(d.load(p, 4, nullptr, -1, -1, &err), err, "one.npy",
            "1 dimensions");
  p = put("flt.npy", npy("<f4", "(3, 4)", a, sizeof a));
  CHECK_ERR(d.load(p, 4, nullptr, -1, -1, &err), err, "flt.npy", "descr");
  p = put("trunc.npy", npy("<i4", "(3, 4)", a, sizeof a - 4));
  CHECK_ERR(d.load(p, 4, nullptr, -1, -1, &err), err, "trunc.npy",
            "truncated");
  p = put("junk.npy", "hello");
  CHECK_ERR(d.load(p, 4, nullptr, -1, -1, &err), err, "junk.npy", "magic");
}

static void testJsonl() {
  std::string err;
  TrainData d;
  std::string p = put("d.jsonl", "{\"text\": \"ab\"}\n"
                                 "   \r\n"
                                 "{\"prompt\": \"xy\", \"completion\": \"z\"}");
  CHECK(d.load(p, 4, byteTokenizer, 1, 2, &err));
  // Stream [1 a b 2 | 1 x y z | 2], targets 1111 0001 1; the tail is dropped.
  CHECK(d.size() == 2 && d.droppedTokens() == 1);
  CHECK((d.example(0).ids == std::vector<int32_t>{1, 'a', 'b', 2}));
  CHECK((d.example(0).labels == std::vector<int32_t>{'a', 'b', 2, -100}));
  CHECK((d.example(1).ids == std::vector<int32_t>{1, 'x', 'y', 'z'}));
  CHECK((d.example(1).labels == std::vector<int32_t>{-100, -100, 'z', -100}));

  // Prompt/completion at the start of a longer block, no bos/eos.
  p = put("e.jsonl", "{\"prompt\": \"pq\", \"completion\": \"rs\"}\n");
  CHECK(d.load(p, 4, byteTokenizer, -1, -1, &err));
  CHECK((d.example(0).labels == std::vector<int32_t>{-100, 'r', 's', -100}));

  p = put("bad.jsonl", "{\"text\": \"ab\"}\n\n{\"text\": \"ab\"\n");
  CHECK_ERR(d.load(p, 2, byteTokenizer, 1, 2, &err), err, "bad.jsonl",
            "line 3", "JSON");
  p = put("miss.jsonl", "{\"prompt\": \"ab\"}\n");
  CHECK_ERR(d.load(p, 2, byteTokenizer, 1, 2, &err), err, "miss.jsonl",
            "line 1", "completion");
  p = put("type.jsonl", "{\"text\": \"abc\"}\n{\"text\": 3}\n");
  CHECK_ERR(d.load(p, 2, byteTokenizer, 1, 2, &err), err, "type.jsonl",
            "line 2", "'text'");
  p = put("none.jsonl", "{\"foo\": \"abc\"}\n");
  CHECK_ERR(d.load(p, 2, byteTokenizer, 1, 2, &err), err, "none.jsonl",
            "line 1", "'text'");
  auto failing = [](const std::string &, std::vector<int32_t> *,
                    std::string *e) {
    *e = "boom";
    return false;
  };
  p = put("ok.jsonl", "{\"text\": \"abc\"}\n");
  CHECK_ERR(d.load(p, 2, failing, 1, 2, &err), err, "ok.jsonl", "line 1",
            "boom");
  CHECK_ERR(d.load(p, 2, nullptr, 1, 2, &err), err, "ok.jsonl", "tokenizer");
}

static void testText() {
  std::string err;
  TrainData d;
  std::string p = put("doc.txt", "hello world");
  CHECK(d.load(p, 5, byteTokenizer, 1, 2, &err));
  // 13 tokens: [1 h e l l] [o ' ' w o r], "ld" + eos dropped.
  CHECK(d.size() == 2 && d.droppedTokens() == 3);
  CHECK((d.example(0).ids == std::vector<int32_t>{1, 'h', 'e', 'l', 'l'}));
  CHECK((d.example(0).labels ==
         std::vector<int32_t>{'h', 'e', 'l', 'l', -100}));
  CHECK((d.example(1).ids == std::vector<int32_t>{'o', ' ', 'w', 'o', 'r'}));
  CHECK(d.load(p, 11, byteTokenizer, -1, -1, &err) && d.size() == 1);
  CHECK_ERR(d.load(p, 20, byteTokenizer, 1, 2, &err), err, "doc.txt",
            "13 tokens", "needs 20");
  p = put("bad.txt", "ok\xff");
  CHECK_ERR(d.load(p, 1, byteTokenizer, 1, 2, &err), err, "bad.txt",
            "UTF-8", "offset 2");
  CHECK_ERR(d.load(tmpDir + "/missing.txt", 1, byteTokenizer, 1, 2, &err),
            err, "missing.txt", "cannot open");
}

static std::vector<int> batchIdx(const TrainData &d, uint64_t step, int B,
                                 uint64_t seed, bool shuffle) {
  std::vector<int32_t> ids, labels;
  d.batch(step, B, seed, shuffle, &ids, &labels);
  std::vector<int> out;
  for (int b = 0; b < B; ++b) {
    out.push_back(ids[b * 3]);
    if (ids[b * 3 + 1] != 100 + ids[b * 3] ||
        labels[b * 3] != ids[b * 3 + 1] || labels[b * 3 + 2] != -100)
      out.back() = -1;
  }
  return out;
}

static void testOrder(const std::string &scriptDir) {
  std::string err;
  // Rows i = [i, 100+i, 200+i] for N = 5 and N = 7.
  auto make = [&](int n, TrainData *d) {
    std::vector<int32_t> v;
    for (int i = 0; i < n; ++i)
      v.insert(v.end(), {i, 100 + i, 200 + i});
    std::string p = put("ord" + std::to_string(n) + ".npy",
                        npy("<i4", "(" + std::to_string(n) + ", 3)", v.data(),
                            v.size() * 4));
    CHECK(d->load(p, 3, nullptr, -1, -1, &err));
  };
  TrainData d5, d7;
  make(5, &d5);
  make(7, &d7);

  // Expected values from train_order.py (batch_indices(step, 3, 5, 42, True)).
  const std::vector<std::vector<int>> expect = {
      {1, 2, 0}, {4, 3, 4}, {3, 0, 2}, {1, 4, 3},
      {1, 0, 2}, {0, 4, 1}, {3, 2, 3}};
  for (int s = 6; s >= 0; --s) // reverse order: no dependence on history
    CHECK(batchIdx(d5, s, 3, 42, true) == expect[s]);
  CHECK((batchIdx(d5, 1, 3, 42, false) == std::vector<int>{3, 4, 0}));
  CHECK((batchIdx(d7, 1000000000000ull, 4, 0xFFFFFFFFFFFFFFFFull, true) ==
         std::vector<int>{2, 3, 1, 0}));
  // Each epoch is a permutation; different epochs differ here.
  std::vector<int> e0, e1;
  for (int s = 0; s < 5; ++s) {
    e0.push_back(batchIdx(d5, s, 1, 42, true)[0]);
    e1.push_back(batchIdx(d5, s + 5, 1, 42, true)[0]);
  }
  CHECK((e0 == std::vector<int>{1, 2, 0, 4, 3}));
  CHECK((e1 == std::vector<int>{4, 3, 0, 2, 1}));
  // A fresh object gives the same batch (pure in step/seed).
  TrainData d5b;
  make(5, &d5b);
  CHECK(batchIdx(d5b, 4, 3, 42, true) == expect[4]);

  // Cross-check against train_order.py over many (step, B, n, seed).
  std::string cmd = "python3 -c 'import sys; sys.path.insert(0, \"" +
                    scriptDir + "\")\nfrom train_order import batch_indices\n"
                    "for seed in (0, 42, 2**64 - 1, 0x123456789abcdef):\n"
                    "  for n in (5, 7):\n"
                    "    for B in (1, 3, 4, 11):\n"
                    "      for s in (0, 1, 2, 7, 30, 12345):\n"
                    "        print(*batch_indices(s, B, n, seed, True))' "
                    "2>&1";
  int status;
  std::string out = runCommand(cmd, &status);
  if (status != 0) {
    fprintf(stderr, "FAIL: train_order.py did not run: %s\n", out.c_str());
    ++failures;
    return;
  }
  std::istringstream lines(out);
  std::string line;
  int compared = 0;
  for (uint64_t seed : {0ull, 42ull, 0xFFFFFFFFFFFFFFFFull,
                        0x123456789abcdefull})
    for (int n : {5, 7})
      for (int B : {1, 3, 4, 11})
        for (uint64_t s : {0, 1, 2, 7, 30, 12345}) {
          std::getline(lines, line);
          std::istringstream in(line);
          std::vector<int> py;
          int v;
          while (in >> v)
            py.push_back(v);
          bool same = batchIdx(n == 5 ? d5 : d7, s, B, seed, true) == py;
          CHECK(same);
          compared += same;
        }
  printf("order: %d micro batches agree with train_order.py\n", compared);
}

static uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static float fromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static std::string safetensors(const std::string &headerJson,
                               const std::string &data) {
  std::string out(8, '\0');
  uint64_t n = headerJson.size();
  for (int i = 0; i < 8; ++i)
    out[i] = (char)(n >> (8 * i));
  return out + headerJson + data;
}

static void testAdapter() {
  std::string err, dir = tmpDir + "/adapter/sub";
  std::vector<AdapterTensor> ts = {
      {"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
       {3, 2},
       {1.5f, -0.0f, fromBits(0x7fc12345), INFINITY, fromBits(1), 1e-30f}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
       {2, 4},
       {0.1f, 0.2f, 0.3f, -0.4f, 5.f, 6.f, 7.f, 3.4028235e38f}},
      {"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", {0, 4},
       {}},
  };
  AdapterConfig cfg{8, 16.f, {"q_proj", "down_proj"}, "org/model", true};
  CHECK(writePeftAdapter(dir, cfg, ts, &err));
  if (!err.empty())
    fprintf(stderr, "  %s\n", err.c_str());

  std::vector<AdapterTensor> back;
  AdapterConfig c2;
  CHECK(readPeftAdapterTensors(dir, &back, &c2, &err));
  CHECK(back.size() == 3);
  for (size_t i = 1; i < back.size(); ++i)
    CHECK(back[i - 1].key < back[i].key);
  for (const AdapterTensor &t : ts)
    for (const AdapterTensor &b : back)
      if (b.key == t.key) {
        CHECK(b.shape == t.shape);
        CHECK(b.data.size() == t.data.size());
        for (size_t i = 0; i < t.data.size() && i < b.data.size(); ++i)
          CHECK(bitsOf(b.data[i]) == bitsOf(t.data[i]));
      }
  CHECK(c2.rank == 8 && c2.alpha == 16.f && c2.use_rslora &&
        c2.base_model == "org/model" &&
        (c2.targets == std::vector<std::string>{"q_proj", "down_proj"}));

  // File layout and config fields.
  std::string st = slurp(dir + "/adapter_model.safetensors");
  uint64_t hs = 0;
  for (int i = 7; i >= 0; --i)
    hs = (hs << 8) | (unsigned char)st[i];
  CHECK(hs % 8 == 0 && 8 + hs + 4 * 14 == st.size());
  auto h = nlohmann::json::parse(st.substr(8, hs), nullptr, false);
  CHECK(!h.is_discarded() && h["__metadata__"]["format"] == "pt");
  CHECK(h["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]
            ["data_offsets"] == nlohmann::json::parse("[0, 0]"));
  CHECK(h["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
            ["data_offsets"] == nlohmann::json::parse("[0, 32]"));
  CHECK(h["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
            ["data_offsets"] == nlohmann::json::parse("[32, 56]"));
  auto c = nlohmann::json::parse(slurp(dir + "/adapter_config.json"), nullptr,
                                 false);
  CHECK(!c.is_discarded());
  CHECK(c["peft_type"] == "LORA" && c["task_type"] == "CAUSAL_LM" &&
        c["r"] == 8 && c["lora_alpha"] == 16 && c["lora_dropout"] == 0.0 &&
        c["bias"] == "none" && c["fan_in_fan_out"] == false &&
        c["init_lora_weights"] == true && c["inference_mode"] == true &&
        c["use_rslora"] == true && c["use_dora"] == false &&
        c["modules_to_save"].is_null() && c["layers_to_transform"].is_null() &&
        c["layers_pattern"].is_null() && c["revision"].is_null() &&
        c["rank_pattern"].is_object() && c["rank_pattern"].empty() &&
        c["alpha_pattern"].is_object() &&
        c["base_model_name_or_path"] == "org/model" &&
        c["target_modules"] == nlohmann::json::parse("[\"q_proj\", "
                                                     "\"down_proj\"]"));
  // Fractional alpha is kept as a float.
  AdapterConfig cf = cfg;
  cf.alpha = 2.5f;
  CHECK(writePeftAdapter(dir, cf, ts, &err));
  CHECK(readPeftAdapterTensors(dir, &back, &c2, &err) && c2.alpha == 2.5f);
  CHECK(writePeftAdapter(dir, cfg, ts, &err));

  // Invalid input to the writer.
  std::vector<AdapterTensor> badShape = {{"k", {2, 2}, {1, 2, 3}}};
  CHECK_ERR(writePeftAdapter(dir, cfg, badShape, &err), err, "'k'",
            "3 values");

  // Cross-check with the safetensors package if present.
  int status;
  runCommand("pip show safetensors >/dev/null 2>&1", &status);
  if (status == 0) {
    std::string out = runCommand(
        "python3 -c 'import sys\nfrom safetensors.numpy import load_file\n"
        "d = load_file(sys.argv[1])\nfor k in d:\n"
        "  print(k, d[k].dtype, list(d[k].shape), d[k].tobytes().hex())' " +
            dir + "/adapter_model.safetensors 2>&1",
        &status);
    std::string expect;
    for (const char *k :
         {"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
          "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
          "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"})
      for (const AdapterTensor &t : ts)
        if (t.key == k) {
          std::string hex;
          char buf[3];
          for (size_t i = 0; i < t.data.size() * 4; ++i) {
            snprintf(buf, sizeof buf, "%02x",
                     ((const unsigned char *)t.data.data())[i]);
            hex += buf;
          }
          expect += t.key + " float32 [" + std::to_string(t.shape[0]) + ", " +
                    std::to_string(t.shape[1]) + "] " + hex + "\n";
        }
    CHECK(status == 0 && out == expect);
    if (status != 0 || out != expect)
      fprintf(stderr, "python said:\n%s\nexpected:\n%s", out.c_str(),
              expect.c_str());
    else
      printf("adapter: safetensors.numpy.load_file agrees\n");
  } else {
    printf("adapter: python safetensors not installed, skipped cross-check\n");
  }

  // PEFT-style keys with the adapter name, BF16 and F16, string targets.
  std::string d2 = tmpDir + "/peft";
  mkdir(d2.c_str(), 0755);
  std::ofstream(d2 + "/adapter_config.json")
      << "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
         "\"target_modules\": \"q_proj\"}";
  // bf16 0x3fc0 = 1.5, 0xc000 = -2; f16 0x3c00 = 1, 0x0001 = 2^-24.
  std::string data = std::string("\xc0\x3f\x00\xc0", 4) +
                     std::string("\x00\x3c\x01\x00", 4);
  std::string hdr = "{\"m.lora_A.default.weight\": {\"dtype\": \"BF16\", "
                    "\"shape\": [1, 2], \"data_offsets\": [0, 4]}, "
                    "\"m.lora_B.default.weight\": {\"dtype\": \"F16\", "
                    "\"shape\": [2, 1], \"data_offsets\": [4, 8]}}";
  std::string stPath = d2 + "/adapter_model.safetensors";
  std::ofstream(stPath, std::ios::binary) << safetensors(hdr, data);
  CHECK(readPeftAdapterTensors(d2, &back, &c2, &err));
  CHECK(back.size() == 2 && back[0].key == "m.lora_A.weight" &&
        back[1].key == "m.lora_B.weight");
  if (back.size() == 2) {
    CHECK(back[0].data[0] == 1.5f && back[0].data[1] == -2.f);
    CHECK(back[1].data[0] == 1.f && back[1].data[1] == std::ldexp(1.f, -24));
  }
  CHECK(c2.rank == 4 && c2.alpha == 8.f && !c2.use_rslora &&
        (c2.targets == std::vector<std::string>{"q_proj"}));

  // Malformed safetensors.
  auto writeSt = [&](const std::string &bytes) {
    std::ofstream(stPath, std::ios::binary | std::ios::trunc) << bytes;
  };
  std::string good = safetensors(hdr, data);
  writeSt(good.substr(0, good.size() - 3));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_model.safetensors", "m.lora_B.default.weight",
            "data_offsets");
  writeSt(good.substr(0, 20));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_model.safetensors", "header size");
  writeSt("abc");
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_model.safetensors", "truncated");
  writeSt(safetensors("{\"m.weight\": {\"dtype\": ", data));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_model.safetensors", "JSON");
  writeSt(safetensors("{\"m.weight\": {\"dtype\": \"F32\", \"shape\": [2], "
                      "\"data_offsets\": [4, 12]}}",
                      data));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_model.safetensors", "'m.weight'", "outside");
  writeSt(safetensors("{\"m.weight\": {\"dtype\": \"I32\", \"shape\": [2], "
                      "\"data_offsets\": [0, 8]}}",
                      data));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_model.safetensors", "'m.weight'", "dtype", "I32");
  writeSt(safetensors("{\"m.weight\": {\"dtype\": \"F32\", \"shape\": [3], "
                      "\"data_offsets\": [0, 8]}}",
                      data));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err, "'m.weight'",
            "need 12");
  writeSt(safetensors("{\"m.weight\": {\"dtype\": \"F32\", \"shape\": [2]}}",
                      data));
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err, "'m.weight'",
            "data_offsets");
  writeSt(good);
  CHECK(readPeftAdapterTensors(d2, &back, &c2, &err));

  // Malformed config.
  auto writeCfg = [&](const std::string &text) {
    std::ofstream(d2 + "/adapter_config.json", std::ios::trunc) << text;
  };
  writeCfg("{\"lora_alpha\": 8, \"target_modules\": [\"q\"]}");
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_config.json", "'r'");
  writeCfg("{\"r\": 4, \"target_modules\": [\"q\"]}");
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_config.json", "'lora_alpha'");
  writeCfg("{\"r\": 4, \"lora_alpha\": 8}");
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_config.json", "'target_modules'");
  writeCfg("{\"r\": 4, \"lora_alpha\": 8, \"target_modules\": [1]}");
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_config.json", "'target_modules'");
  writeCfg("{\"r\": 4,");
  CHECK_ERR(readPeftAdapterTensors(d2, &back, &c2, &err), err,
            "adapter_config.json", "JSON");
  CHECK_ERR(readPeftAdapterTensors(tmpDir + "/nope", &back, &c2, &err), err,
            "nope/adapter_config.json", "cannot open");
}

static int countTemps(const std::string &dir) {
  int n = 0;
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d))
      n += std::strstr(e->d_name, ".tmp") != nullptr;
    closedir(d);
  }
  return n;
}

static void testAtomic() {
  std::string err, dir = tmpDir + "/atomic";
  mkdir(dir.c_str(), 0755);
  std::string path = dir + "/ckpt.bin";
  CHECK(writeFileAtomic(path, "old", 3, &err));
  CHECK(slurp(path) == "old");
  struct stat st;
  CHECK(stat(path.c_str(), &st) == 0 && (st.st_mode & 0777) == 0644);

  // Parent folder missing.
  CHECK_ERR(writeFileAtomic(dir + "/missing/x.bin", "new", 3, &err), err,
            "missing/x.bin", "temporary");

  // The write itself fails (file size limit): the old file stays.
  std::vector<char> big(1 << 20, 'x');
  struct rlimit old;
  getrlimit(RLIMIT_FSIZE, &old);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  auto prev = signal(SIGXFSZ, SIG_IGN);
  CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  bool ok = writeFileAtomic(path, big.data(), big.size(), &err);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  CHECK_ERR(ok, err, "ckpt.bin", "write failed");
  CHECK(slurp(path) == "old");
  CHECK(countTemps(dir) == 0);

  // rename fails (the target is a non-empty folder): nothing left behind.
  std::string sub = dir + "/isdir";
  mkdir(sub.c_str(), 0755);
  put("atomic/isdir/f", "x");
  CHECK_ERR(writeFileAtomic(sub, "new", 3, &err), err, "isdir", "rename");
  CHECK(countTemps(dir) == 0);

  // Folder not writable (meaningless as root, who may write anyway).
  if (geteuid() != 0) {
    chmod(dir.c_str(), 0555);
    CHECK_ERR(writeFileAtomic(path, "new", 3, &err), err, "ckpt.bin");
    chmod(dir.c_str(), 0755);
    CHECK(slurp(path) == "old");
  } else {
    printf("atomic: running as root, skipped the read-only folder case\n");
  }

  CHECK(writeFileAtomic(path, "newer", 5, &err));
  CHECK(slurp(path) == "newer" && countTemps(dir) == 0);
}

int main(int argc, char **argv) {
  std::string scriptDir;
  if (argc > 1) {
    scriptDir = argv[1];
  } else {
    std::string f = __FILE__;
    size_t slash = f.rfind('/');
    scriptDir = slash == std::string::npos ? "." : f.substr(0, slash);
  }
  char tmpl[] = "/tmp/train_io_test.XXXXXX";
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    return 1;
  }
  tmpDir = tmpl;
  testNpy();
  testJsonl();
  testText();
  testOrder(scriptDir);
  testAdapter();
  testAtomic();
  if (failures) {
    fprintf(stderr, "%d check(s) failed; files kept in %s\n", failures,
            tmpDir.c_str());
    return 1;
  }
  std::string cmd = "rm -rf '" + tmpDir + "'";
  if (system(cmd.c_str()) != 0)
    fprintf(stderr, "note: could not remove %s\n", tmpDir.c_str());
  printf("train_io_test: all checks passed\n");
  return 0;
}
