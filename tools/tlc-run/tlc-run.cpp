// tlc-run: a thin command line over the runtime C API (runtime/include/tlc).
//   info MODULE
//   logits MODULE --ids 1,2,3 -o LOGITS.npy
//   generate MODULE (--prompt TEXT | --ids 1,2,3) [--max-new-tokens N]
//            [--temperature T] [--top-k K] [--top-p P] [--seed S]
//   bench MODULE [--prompt-len N] [--gen-len M]
//   tokenize MODULE (--text TEXT | --file FILE)
//   detokenize MODULE --ids 1,2,3
//   train TRAIN.tlm --data FILE --steps N --lr LR --out ADAPTER_DIR
//         [--init-adapter DIR] [--save-every K] [--resume] [--seed S]
//         [--schedule constant|linear|cosine] [--warmup W] [--grad-accum G]
//         [--max-grad-norm X] [--weight-decay D] [--log FILE.jsonl]
// Common: --threads N.
#include "tlc/finetune.h"
#include "tlc/tlc.h"
#include "tools/tlc-run/Train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace {

int usage() {
  fprintf(stderr,
          "usage: tlc-run info MODULE\n"
          "       tlc-run logits MODULE --ids 1,2,3 -o LOGITS.npy\n"
          "       tlc-run generate MODULE (--prompt TEXT | --ids 1,2,3) "
          "[--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] "
          "[--seed S]\n"
          "       tlc-run bench MODULE [--prompt-len N] [--gen-len M]\n"
          "       tlc-run tokenize MODULE (--text TEXT | --file FILE)\n"
          "       tlc-run detokenize MODULE --ids 1,2,3\n"
          "       tlc-run train TRAIN.tlm --data FILE --steps N --lr LR --out "
          "ADAPTER_DIR [--init-adapter DIR] [--save-every K] [--resume] "
          "[--seed S] [--schedule constant|linear|cosine] [--warmup W] "
          "[--grad-accum G] [--max-grad-norm X] [--weight-decay D] "
          "[--log FILE.jsonl] [--shuffle false]\n"
          "options for all: --threads N, --device cpu|gpu (default: a GPU "
          "executable where one runs); logits, generate, bench: --adapter "
          "DIR (a PEFT LoRA adapter, for modules compiled with --lora-rank or "
          "--train)\n");
  return 1;
}

/// The target of the executable this host runs ("x86_64", "vulkan").
const char *selectedTarget(const tlc_module_t *module) {
  for (size_t i = 0; i < tlc_module_executable_count(module); ++i) {
    tlc_executable_info_t e;
    if (tlc_status_t s = tlc_module_executable_info(module, i, &e))
      tlc_status_free(s);
    else if (e.selected)
      return e.target;
  }
  return "?";
}

int fail(const char *fmt, const char *arg) {
  fprintf(stderr, "tlc-run: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  return 1;
}

int failStatus(tlc_status_t s) {
  fprintf(stderr, "tlc-run: error: %s\n", tlc_status_message(s));
  tlc_status_free(s);
  return 1;
}

struct Args {
  std::string command, module;
  std::map<std::string, std::string> opts;
  bool has(const char *k) const { return opts.count(k) != 0; }
  std::string get(const char *k, const char *dflt = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? dflt : it->second;
  }
};

bool parseArgs(int argc, char **argv, Args *a) {
  if (argc < 3)
    return false;
  a->command = argv[1];
  a->module = argv[2];
  for (int i = 3; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 && k != "-o")
      return false;
    std::string v;
    size_t eq = k.find('=');
    if (eq != std::string::npos) {
      v = k.substr(eq + 1);
      k = k.substr(0, eq);
    } else if (k == "--resume") { // flags without a value
      v = "";
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      fprintf(stderr, "tlc-run: error: %s needs a value\n", k.c_str());
      return false;
    }
    a->opts[k] = v;
  }
  return true;
}

bool parseIds(const std::string &s, std::vector<int32_t> *ids) {
  const char *p = s.c_str();
  while (*p) {
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < INT32_MIN || v > INT32_MAX)
      return false;
    ids->push_back((int32_t)v);
    p = end;
    while (*p == ',' || *p == ' ')
      ++p;
  }
  return !ids->empty();
}

bool parseNumber(const Args &a, const char *key, double dflt, double *out) {
  std::string s = a.get(key);
  if (s.empty()) {
    *out = dflt;
    return true;
  }
  char *end;
  *out = strtod(s.c_str(), &end);
  if (*end || end == s.c_str()) {
    fprintf(stderr, "tlc-run: error: %s expects a number, got '%s'\n", key,
            s.c_str());
    return false;
  }
  return true;
}

/// Writes float32 [rows, cols] as .npy (atomically).
bool writeNpy(const std::string &path, const float *data, size_t rows,
              size_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) +
                       "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".tmp";
  FILE *f = fopen(tmp.c_str(), "wb");
  if (!f)
    return false;
  uint16_t len = (uint16_t)header.size();
  bool ok = fwrite("\x93NUMPY\x01\x00", 1, 8, f) == 8 &&
            fwrite(&len, 2, 1, f) == 1 &&
            fwrite(header.data(), 1, header.size(), f) == header.size() &&
            fwrite(data, sizeof(float), rows * cols, f) == rows * cols;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

double now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Sampler {
  double temperature = 0, topP = 1;
  int64_t topK = 0;
  std::mt19937_64 rng;
  std::vector<std::pair<float, int32_t>> cand;

  int32_t pick(const float *logits, size_t vocab) {
    if (temperature <= 0)
      return (int32_t)(std::max_element(logits, logits + vocab) - logits);
    cand.clear();
    for (size_t i = 0; i < vocab; ++i)
      cand.push_back({logits[i], (int32_t)i});
    std::sort(cand.begin(), cand.end(),
              [](auto &a, auto &b) { return a.first > b.first; });
    if (topK > 0 && (size_t)topK < cand.size())
      cand.resize((size_t)topK);
    double maxv = cand[0].first, sum = 0;
    std::vector<double> p(cand.size());
    for (size_t i = 0; i < cand.size(); ++i)
      sum += p[i] = std::exp((cand[i].first - maxv) / temperature);
    double cum = 0;
    size_t keep = cand.size();
    for (size_t i = 0; i < cand.size(); ++i) {
      p[i] /= sum;
      cum += p[i];
      if (cum >= topP) {
        keep = i + 1;
        break;
      }
    }
    double total = 0;
    for (size_t i = 0; i < keep; ++i)
      total += p[i];
    double r = std::uniform_real_distribution<double>(0, total)(rng);
    for (size_t i = 0; i < keep; ++i)
      if ((r -= p[i]) <= 0)
        return cand[i].second;
    return cand[keep - 1].second;
  }
};

int64_t peakRssBytes() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (int64_t)ru.ru_maxrss * 1024;
}

} // namespace

int main(int argc, char **argv) {
  Args a;
  if (!parseArgs(argc, argv, &a))
    return usage();
  static const char *commands[] = {"info",     "logits",     "generate",
                                   "bench",    "tokenize",   "detokenize",
                                   "train"};
  if (std::find_if(std::begin(commands), std::end(commands),
                   [&](const char *c) { return a.command == c; }) ==
      std::end(commands))
    return usage();

  // --device cpu|gpu: which kind of executable runs (the runtime reads it
  // from TLC_DEVICE); by default a GPU one where its driver finds a device.
  if (a.has("--device")) {
    std::string d = a.get("--device");
    if (d != "cpu" && d != "gpu")
      return fail("--device expects cpu or gpu, got '%s'", d.c_str());
    setenv("TLC_DEVICE", d.c_str(), 1);
    a.opts.erase("--device");
  }
  tlc_module_t *module = nullptr;
  if (tlc_status_t s = tlc_module_load_file(a.module.c_str(), &module))
    return failStatus(s);
  struct Release {
    tlc_module_t *m;
    ~Release() { tlc_module_release(m); }
  } releaseModule{module};
  // A GPU executable that does not fit this device: say so, and which runs.
  for (size_t i = 0; i < tlc_module_executable_count(module); ++i) {
    tlc_executable_info_t e;
    tlc_status_free(tlc_module_executable_info(module, i, &e));
    if (e.gpu && *e.not_run)
      fprintf(stderr, "tlc-run: note: the %s executable does not run here "
                      "(%s); running the %s one\n",
              e.target, e.not_run, selectedTarget(module));
  }
  tlc_model_info_t info;
  tlc_status_free(tlc_module_model_info(module, &info));
  if (a.command == "train")
    return tlc::run::trainCommand(module, a.module, a.opts);

  if (a.command == "info") {
    printf("module: %s (%llu bytes; data %llu bytes)\n", a.module.c_str(),
           (unsigned long long)info.file_size,
           (unsigned long long)info.data_size);
    printf("model: %s (%s), weights %s\n", info.name, info.architecture,
           info.weight_format);
    printf("  parameters %lld, vocab %lld, hidden %lld, intermediate %lld, "
           "layers %lld\n",
           (long long)info.parameter_count, (long long)info.vocab_size,
           (long long)info.hidden_size, (long long)info.intermediate_size,
           (long long)info.num_layers);
    printf("  heads %lld, kv heads %lld, head_dim %lld, rope_theta %g, "
           "rms_norm_eps %g, tied embeddings %s\n",
           (long long)info.num_heads, (long long)info.num_kv_heads,
           (long long)info.head_dim, info.rope_theta, info.rms_norm_eps,
           info.tied_embeddings ? "yes" : "no");
    printf("  context %lld tokens, KV cache %llu bytes, bos %lld, eos %lld, "
           "tokenizer %s\n",
           (long long)info.max_seq, (unsigned long long)info.kv_cache_size,
           (long long)info.bos_token_id, (long long)info.eos_token_id,
           info.has_tokenizer ? "yes" : "no");
    if (*info.device || info.default_threads)
      printf("device: %s, %u threads by default\n",
             *info.device ? info.device : "-", info.default_threads);
    for (size_t i = 0; i < tlc_module_executable_count(module); ++i) {
      tlc_executable_info_t e;
      tlc_status_free(tlc_module_executable_info(module, i, &e));
      printf("target: %s (cpu %s%s%s), %s, %llu bytes, %zu kernels%s\n",
             e.target, e.cpu, *e.needs ? "; needs " : "", e.needs, e.format,
             (unsigned long long)e.image_size, e.kernel_count,
             e.selected ? " [selected]" : "");
    }
    tlc_train_info_t ti;
    if (tlc_status_t st = tlc_module_train_info(module, &ti)) {
      tlc_status_free(st);
    } else {
      std::string targets;
      for (size_t i = 0; i < ti.target_count; ++i) {
        const char *name = "";
        tlc_status_free(tlc_module_train_target(module, i, &name));
        targets += (i ? "," : "") + std::string(name);
      }
      printf("lora: r %d, alpha %g, targets %s, %zu tensors, %llu parameters\n",
             ti.lora_rank, ti.lora_alpha, targets.c_str(), ti.tensor_count,
             (unsigned long long)ti.adapter_elements);
      if (ti.has_train_step)
        printf("training: %u x %u tokens per step, optimizer %s, state %llu "
               "bytes\n",
               ti.batch, ti.seq_len, ti.optimizer,
               (unsigned long long)ti.state_size);
      else
        printf("adapter slots: load a PEFT adapter with --adapter DIR\n");
    }
    for (size_t i = 0; i < tlc_module_entry_count(module); ++i) {
      tlc_entry_info_t e;
      tlc_status_free(tlc_module_entry_info(module, i, &e));
      printf("entry point: %s (up to %u tokens per call, %zu dispatches, "
             "arena %llu bytes)\n",
             e.name, e.max_tokens, e.dispatch_count,
             (unsigned long long)e.arena_size);
    }
    return 0;
  }

  if (a.command == "tokenize") {
    std::string text;
    if (a.has("--text")) {
      text = a.get("--text");
    } else if (a.has("--file")) {
      FILE *f = fopen(a.get("--file").c_str(), "rb");
      if (!f)
        return fail("cannot open %s", a.get("--file").c_str());
      char buf[65536];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        text.append(buf, n);
      fclose(f);
    } else {
      return usage();
    }
    // One line of ids per input line.
    size_t start = 0;
    while (start <= text.size()) {
      size_t nl = text.find('\n', start);
      if (nl == std::string::npos)
        nl = text.size();
      if (nl == text.size() && start == text.size() && start != 0)
        break;
      int32_t *ids;
      size_t count;
      if (tlc_status_t s = tlc_tokenize(module, text.data() + start, nl - start,
                                        &ids, &count))
        return failStatus(s);
      for (size_t i = 0; i < count; ++i)
        printf(i ? " %d" : "%d", ids[i]);
      printf("\n");
      tlc_free(ids);
      start = nl + 1;
    }
    return 0;
  }

  if (a.command == "detokenize") {
    std::vector<int32_t> ids;
    if (!parseIds(a.get("--ids"), &ids))
      return fail("--ids expects comma-separated integers, got '%s'",
                  a.get("--ids").c_str());
    char *text;
    size_t len;
    if (tlc_status_t s =
            tlc_detokenize(module, ids.data(), ids.size(), &text, &len))
      return failStatus(s);
    fwrite(text, 1, len, stdout);
    printf("\n");
    tlc_free(text);
    return 0;
  }

  double threads;
  if (!parseNumber(a, "--threads", 0, &threads))
    return 1;
  tlc_session_options_t so = {(int32_t)threads};
  tlc_session_t *session = nullptr;
  if (tlc_status_t s = tlc_session_create(module, &so, &session))
    return failStatus(s);
  struct ReleaseSession {
    tlc_session_t *s;
    ~ReleaseSession() { tlc_session_release(s); }
  } releaseSession{session};
  if (a.has("--adapter")) {
    size_t floats;
    float *params = tlc_session_adapters(session, &floats);
    if (!params)
      return fail("%s: the module has no adapter slots (compile it with "
                  "--lora-rank R --lora-alpha A, or --train)",
                  a.module.c_str());
    if (tlc_status_t s =
            tlc_adapter_load(module, a.get("--adapter").c_str(), params)) {
      fail("%s", tlc_status_message(s));
      tlc_status_free(s);
      return 1;
    }
  }

  if (a.command == "logits") {
    std::vector<int32_t> ids;
    if (!parseIds(a.get("--ids"), &ids))
      return fail("--ids expects comma-separated integers, got '%s'",
                  a.get("--ids").c_str());
    if (!a.has("-o"))
      return fail("%s", "logits needs -o LOGITS.npy");
    if (tlc_status_t s =
            tlc_session_prefill(session, ids.data(), ids.size(), true))
      return failStatus(s);
    size_t rows, vocab;
    const float *logits = tlc_session_logits(session, &rows, &vocab);
    if (!writeNpy(a.get("-o"), logits, rows, vocab))
      return fail("cannot write %s", a.get("-o").c_str());
    return 0;
  }

  if (a.command == "generate") {
    std::vector<int32_t> prompt;
    bool idsMode = a.has("--ids");
    if (idsMode) {
      if (!parseIds(a.get("--ids"), &prompt))
        return fail("--ids expects comma-separated integers, got '%s'",
                    a.get("--ids").c_str());
    } else if (a.has("--prompt")) {
      std::string text = a.get("--prompt");
      int32_t *ids;
      size_t count;
      if (tlc_status_t s =
              tlc_tokenize(module, text.data(), text.size(), &ids, &count))
        return failStatus(s);
      if (info.bos_token_id >= 0)
        prompt.push_back((int32_t)info.bos_token_id);
      prompt.insert(prompt.end(), ids, ids + count);
      tlc_free(ids);
      fwrite(text.data(), 1, text.size(), stdout); // the completion follows
      fflush(stdout);
    } else {
      return usage();
    }
    double maxNew, temp, topK, topP, seed;
    if (!parseNumber(a, "--max-new-tokens", 64, &maxNew) ||
        !parseNumber(a, "--temperature", 0, &temp) ||
        !parseNumber(a, "--top-k", 0, &topK) ||
        !parseNumber(a, "--top-p", 1, &topP) ||
        !parseNumber(a, "--seed", 0, &seed))
      return 1;
    Sampler sampler;
    sampler.temperature = temp;
    sampler.topK = (int64_t)topK;
    sampler.topP = topP;
    sampler.rng.seed((uint64_t)seed);
    double t0 = now();
    if (tlc_status_t s =
            tlc_session_prefill(session, prompt.data(), prompt.size(), false))
      return failStatus(s);
    double t1 = now();
    std::vector<int32_t> out;
    std::string printed;
    for (int64_t i = 0; i < (int64_t)maxNew; ++i) {
      size_t rows, vocab;
      const float *logits = tlc_session_logits(session, &rows, &vocab);
      int32_t next = sampler.pick(logits + (rows - 1) * vocab, vocab);
      out.push_back(next);
      if (idsMode) {
        printf(i ? " %d" : "%d", next);
      } else {
        if (next == info.eos_token_id)
          break;
        // Print the newly completed text (decode of all, minus what's shown).
        char *text;
        size_t len;
        if (tlc_status_t s =
                tlc_detokenize(module, out.data(), out.size(), &text, &len))
          return failStatus(s);
        std::string now_text(text, len);
        tlc_free(text);
        if (now_text.size() > printed.size() &&
            now_text.compare(0, printed.size(), printed) == 0) {
          fwrite(now_text.data() + printed.size(), 1,
                 now_text.size() - printed.size(), stdout);
          fflush(stdout);
          printed = now_text;
        }
      }
      if (i + 1 < (int64_t)maxNew)
        if (tlc_status_t s = tlc_session_decode(session, next))
          return failStatus(s);
    }
    printf("\n");
    fflush(stdout);
    double t2 = now();
    fprintf(stderr,
            "tlc-run: on %s: prompt %zu tokens in %.3f s (%.1f tok/s), "
            "generated %zu tokens in %.3f s (%.1f tok/s)\n",
            selectedTarget(module), prompt.size(), t1 - t0, prompt.size() / std::max(t1 - t0, 1e-9),
            out.size(), t2 - t1, out.size() / std::max(t2 - t1, 1e-9));
    return 0;
  }

  // bench
  double promptLen, genLen;
  if (!parseNumber(a, "--prompt-len", 512, &promptLen) ||
      !parseNumber(a, "--gen-len", 128, &genLen))
    return 1;
  std::vector<int32_t> ids((size_t)promptLen);
  std::mt19937 rng(1234);
  for (auto &id : ids)
    id = (int32_t)(rng() % (uint32_t)info.vocab_size);
  // As llama-bench: pp = one prefill of the whole prompt from an empty
  // cache; tg = generating gen-len tokens one by one from an empty cache.
  // A short warm-up first pages the weights in.
  if (tlc_status_t s = tlc_session_prefill(
          session, ids.data(), std::min<size_t>(ids.size(), 8), false))
    return failStatus(s);
  tlc_session_reset(session);
  double t0 = now();
  if (tlc_status_t s =
          tlc_session_prefill(session, ids.data(), ids.size(), false))
    return failStatus(s);
  double t1 = now();
  tlc_session_reset(session);
  int32_t next = ids[0];
  double t2 = now();
  for (int64_t i = 0; i < (int64_t)genLen; ++i) {
    if (tlc_status_t s = tlc_session_decode(session, next))
      return failStatus(s);
    size_t rows, vocab;
    const float *logits = tlc_session_logits(session, &rows, &vocab);
    next = (int32_t)(std::max_element(logits, logits + vocab) - logits);
  }
  double t3 = now();
  printf("{\"target\": \"%s\", \"prompt_tokens\": %lld, "
         "\"gen_tokens\": %lld, \"threads\": %d, "
         "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, "
         "\"peak_rss_bytes\": %lld}\n",
         selectedTarget(module), (long long)promptLen, (long long)genLen, (int)threads,
         promptLen / std::max(t1 - t0, 1e-9), genLen / std::max(t3 - t2, 1e-9),
         (long long)peakRssBytes());
  return 0;
}
