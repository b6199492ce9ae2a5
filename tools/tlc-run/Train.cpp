// tlc-run train: data -> micro batches -> train_step calls, with the
// learning-rate schedule, gradient accumulation, checkpoints and PEFT output.
//
// A run is a pure function of (module, data, options, seed): the data order
// is derived from the step number (TrainData::batch) and the kernels are
// deterministic, so a checkpoint (state + step) resumes bit-identically.
#include "tools/tlc-run/Train.h"

#include "tlc/train_abi.h"
#include "tools/tlc-run/AdapterIO.h"
#include "tools/tlc-run/TrainData.h"

#include <chrono>
#include <dirent.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace tlc::run {
namespace {

constexpr char kCheckpointMagic[8] = {'T', 'L', 'C', 'C', 'K', 'P', 'T', '1'};

int fail(const std::string &msg) {
  fprintf(stderr, "tlc-run: error: %s\n", msg.c_str());
  return 1;
}

struct Options {
  std::string data, out, initAdapter, log, schedule = "constant";
  long long steps = 0, saveEvery = 0, warmup = 0, gradAccum = 1;
  uint64_t seed = 0;
  double lr = 0, maxGradNorm = 0, weightDecay = 0, beta1 = 0.9,
         beta2 = 0.999, eps = 1e-8;
  bool resume = false, shuffle = true;
  int threads = 0;
};

bool parseOptions(const std::map<std::string, std::string> &m, Options *o,
                  std::string *error) {
  static const std::set<std::string> known = {
      "--data",         "--steps",         "--lr",     "--out",
      "--init-adapter", "--save-every",    "--resume", "--seed",
      "--schedule",     "--warmup",        "--grad-accum", "--max-grad-norm",
      "--weight-decay", "--beta1",         "--beta2",  "--eps",
      "--log",          "--shuffle",       "--threads"};
  for (auto &[k, v] : m)
    if (!known.count(k)) {
      *error = "train: unknown option " + k;
      return false;
    }
  auto str = [&](const char *k, std::string *v) {
    auto it = m.find(k);
    if (it != m.end())
      *v = it->second;
  };
  auto num = [&](const char *k, double *v) {
    auto it = m.find(k);
    if (it == m.end())
      return true;
    char *end;
    *v = strtod(it->second.c_str(), &end);
    if (it->second.empty() || *end || !std::isfinite(*v)) {
      *error = std::string(k) + ": expected a number, got '" + it->second + "'";
      return false;
    }
    return true;
  };
  auto integer = [&](const char *k, long long *v, long long min) {
    auto it = m.find(k);
    if (it == m.end())
      return true;
    char *end;
    *v = strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || *v < min) {
      *error = std::string(k) + ": expected an integer >= " +
               std::to_string(min) + ", got '" + it->second + "'";
      return false;
    }
    return true;
  };
  auto flag = [&](const char *k, bool *v) {
    auto it = m.find(k);
    if (it == m.end())
      return true;
    if (it->second == "" || it->second == "1" || it->second == "true")
      *v = true;
    else if (it->second == "0" || it->second == "false")
      *v = false;
    else {
      *error = std::string(k) + ": expected true or false";
      return false;
    }
    return true;
  };
  long long seed = 0, threads = 0;
  str("--data", &o->data);
  str("--out", &o->out);
  str("--init-adapter", &o->initAdapter);
  str("--schedule", &o->schedule);
  str("--log", &o->log);
  if (!integer("--steps", &o->steps, 1) || !num("--lr", &o->lr) ||
      !integer("--save-every", &o->saveEvery, 0) ||
      !integer("--seed", &seed, 0) || !integer("--warmup", &o->warmup, 0) ||
      !integer("--grad-accum", &o->gradAccum, 1) ||
      !num("--max-grad-norm", &o->maxGradNorm) ||
      !num("--weight-decay", &o->weightDecay) || !num("--beta1", &o->beta1) ||
      !num("--beta2", &o->beta2) || !num("--eps", &o->eps) ||
      !flag("--resume", &o->resume) || !flag("--shuffle", &o->shuffle) ||
      !integer("--threads", &threads, 0))
    return false;
  o->seed = (uint64_t)seed;
  o->threads = (int)threads;
  if (o->data.empty() || o->out.empty() || !m.count("--steps") ||
      !m.count("--lr")) {
    *error = "train needs --data FILE, --steps N, --lr LR and --out DIR";
    return false;
  }
  if (o->schedule != "constant" && o->schedule != "linear" &&
      o->schedule != "cosine") {
    *error = "--schedule must be constant, linear or cosine";
    return false;
  }
  if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) ||
      !(o->eps > 0)) {
    *error = "--beta1 and --beta2 must be in [0, 1) and --eps positive";
    return false;
  }
  if (!(o->lr >= 0) || o->maxGradNorm < 0 || o->weightDecay < 0) {
    *error = "--lr, --max-grad-norm and --weight-decay must be >= 0";
    return false;
  }
  if (o->resume && !o->initAdapter.empty()) {
    *error = "--resume continues from OUT/checkpoint; drop --init-adapter";
    return false;
  }
  return true;
}

/// Learning-rate multiplier of optimizer step k (0-based), as transformers'
/// get_{constant,linear,cosine}_schedule_with_warmup.
double scheduleFactor(const Options &o, long long k) {
  if (k < o.warmup)
    return (double)k / (double)std::max(1LL, o.warmup);
  if (o.schedule == "constant")
    return 1.0;
  double progress =
      (double)(k - o.warmup) / (double)std::max(1LL, o.steps - o.warmup);
  if (o.schedule == "linear")
    return std::max(0.0, 1.0 - progress);
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

/// The checkpoint: magic, sizes, optimizer steps done, then the state.
struct CheckpointHeader {
  char magic[8];
  uint64_t stateFloats, adapterElements, stepsDone, seed;
  uint64_t runHash; // options that decide the result (runIdentity)
};

/// The options a resumed run must share with the run it continues (they
/// decide the data order, the schedule and the update), as text.
std::string runIdentity(const Options &o) {
  char buf[512];
  snprintf(buf, sizeof buf,
           "data=%s steps=%lld accum=%lld schedule=%s warmup=%lld lr=%.17g "
           "clip=%.17g wd=%.17g b1=%.17g b2=%.17g eps=%.17g shuffle=%d "
           "seed=%llu",
           o.data.c_str(), o.steps, o.gradAccum, o.schedule.c_str(), o.warmup,
           o.lr, o.maxGradNorm, o.weightDecay, o.beta1, o.beta2, o.eps,
           (int)o.shuffle, (unsigned long long)o.seed);
  return buf;
}

uint64_t fnv1a(const std::string &s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string checkpointPath(const Options &o) {
  return o.out + "/checkpoint.tlcstate";
}

bool saveCheckpoint(const Options &o, const float *state, size_t floats,
                    uint64_t P, uint64_t stepsDone, std::string *error) {
  CheckpointHeader h{};
  std::memcpy(h.magic, kCheckpointMagic, 8);
  h.stateFloats = floats;
  h.adapterElements = P;
  h.stepsDone = stepsDone;
  h.seed = o.seed;
  h.runHash = fnv1a(runIdentity(o));
  return writeFileAtomic(checkpointPath(o),
                         {{&h, sizeof h}, {state, 4 * floats}}, error);
}

bool loadCheckpoint(const Options &o, float *state, size_t floats, uint64_t P,
                    uint64_t *stepsDone, std::string *error) {
  std::string path = checkpointPath(o);
  FILE *f = fopen(path.c_str(), "rb");
  if (!f) {
    *error = path + ": cannot open (--resume needs a checkpoint from an "
                    "earlier run with the same --out)";
    return false;
  }
  CheckpointHeader h;
  bool ok = fread(&h, sizeof h, 1, f) == 1;
  if (ok && std::memcmp(h.magic, kCheckpointMagic, 8) != 0) {
    *error = path + ": not a tlc training checkpoint";
    fclose(f);
    return false;
  }
  if (ok && (h.stateFloats != floats || h.adapterElements != P)) {
    *error = path + ": written for another training module (state of " +
             std::to_string(h.stateFloats) + " floats, this one has " +
             std::to_string(floats) + ")";
    fclose(f);
    return false;
  }
  if (ok && (h.seed != o.seed || h.runHash != fnv1a(runIdentity(o)))) {
    *error = path + ": written by a run with other options; resume with the "
                    "same --data, --steps, --lr, --seed, --schedule, "
                    "--warmup, --grad-accum, --max-grad-norm, "
                    "--weight-decay, --beta1/2, --eps and --shuffle";
    fclose(f);
    return false;
  }
  ok = ok && fread(state, 4, floats, f) == floats && fgetc(f) == EOF;
  fclose(f);
  if (!ok) {
    *error = path + ": truncated or oversized checkpoint";
    return false;
  }
  *stepsDone = h.stepsDone;
  return true;
}

/// PEFT's initialization: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_
/// with a = sqrt(5)), B = 0. Uniforms from splitmix64(seed), 24 bits each.
void initAdapters(tlc_module_t *m, float *params, uint64_t seed) {
  tlc_train_info_t ti;
  tlc_status_free(tlc_module_train_info(m, &ti));
  uint64_t rng = seed ^ 0x6C6F7261696E6974ull; // "lorainit"
  for (size_t i = 0; i < ti.tensor_count; ++i) {
    tlc_train_tensor_info_t t;
    tlc_module_train_tensor(m, i, &t);
    float *p = params + t.offset;
    size_t n = (size_t)(t.rows * t.cols);
    if (strstr(t.name, ".lora_B.")) {
      std::memset(p, 0, 4 * n);
      continue;
    }
    float bound = 1.0f / std::sqrt((float)t.cols);
    for (size_t j = 0; j < n; ++j) {
      float u = (float)(splitmix64Next(&rng) >> 40) * (1.0f / 16777216.0f);
      p[j] = (2.0f * u - 1.0f) * bound;
    }
  }
}

bool writeAdapter(tlc_module_t *m, const Options &o, const float *params,
                  std::string *error) {
  tlc_train_info_t ti;
  tlc_status_free(tlc_module_train_info(m, &ti));
  tlc_model_info_t mi;
  tlc_module_model_info(m, &mi);
  AdapterConfig cfg;
  cfg.rank = ti.lora_rank;
  cfg.alpha = ti.lora_alpha;
  cfg.base_model = mi.name;
  for (size_t i = 0; i < ti.target_count; ++i)
    cfg.targets.push_back(tlc_module_train_target(m, i));
  std::vector<AdapterTensor> tensors;
  for (size_t i = 0; i < ti.tensor_count; ++i) {
    tlc_train_tensor_info_t t;
    tlc_module_train_tensor(m, i, &t);
    AdapterTensor a{t.name, {t.rows, t.cols}, {}};
    a.external = params + t.offset; // written from the state, not copied
    tensors.push_back(std::move(a));
  }
  return writePeftAdapter(o.out, cfg, tensors, error);
}

/// Removes the temporary files of writes a killed run left behind
/// (writeFileAtomic names them .NAME.tmpXXXXXX).
void removeStaleTemporaries(const std::string &dir) {
  DIR *d = opendir(dir.c_str());
  if (!d)
    return;
  static const char *ours[] = {".checkpoint.tlcstate.tmp",
                               ".adapter_model.safetensors.tmp",
                               ".adapter_config.json.tmp"};
  while (dirent *e = readdir(d))
    for (const char *prefix : ours)
      if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
        unlink((dir + "/" + e->d_name).c_str());
  closedir(d);
}

/// Keeps the log lines of steps <= stepsDone (a resumed run logs the rest).
bool truncateLog(const std::string &path, uint64_t stepsDone,
                 std::string *error) {
  FILE *f = fopen(path.c_str(), "r");
  if (!f)
    return true; // no log yet
  std::string kept;
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    unsigned long long step;
    if (sscanf(line, "{\"step\": %llu", &step) == 1 && step <= stepsDone)
      kept += line;
  }
  fclose(f);
  return writeFileAtomic(path, kept.data(), kept.size(), error);
}

void progress(long long step, long long steps, double loss, double lr,
              double norm, double tokensPerSecond) {
  if (isatty(2)) {
    int width = 24, done = (int)(width * step / std::max(1LL, steps));
    fprintf(stderr, "\r[%.*s%*s] %lld/%lld loss %.4f  %.0f tok/s ", done,
            "========================", width - done, "", step, steps, loss,
            tokensPerSecond);
    if (step == steps)
      fprintf(stderr, "\n");
  }
  printf("step %lld/%lld loss %.6f lr %.6g grad_norm %.6g tokens/s %.1f\n",
         step, steps, loss, lr, norm, tokensPerSecond);
  fflush(stdout);
}

} // namespace

bool loadAdapter(tlc_module_t *m, const std::string &dir, float *params,
                     std::string *error) {
  std::vector<AdapterTensor> tensors;
  AdapterConfig cfg;
  if (!readPeftAdapterTensors(dir, &tensors, &cfg, error))
    return false;
  tlc_train_info_t ti;
  tlc_status_free(tlc_module_train_info(m, &ti));
  float scaling = cfg.use_rslora ? cfg.alpha / std::sqrt((float)cfg.rank)
                                 : cfg.alpha / (float)cfg.rank;
  if (cfg.rank != ti.lora_rank ||
      std::fabs(scaling - ti.lora_alpha / (float)ti.lora_rank) >
          1e-6f * std::fabs(scaling)) {
    *error = dir + "/adapter_config.json: r " + std::to_string(cfg.rank) +
             " and lora_alpha " + std::to_string(cfg.alpha) +
             (cfg.use_rslora ? " with use_rslora" : "") +
             " differ from the module's (r " + std::to_string(ti.lora_rank) +
             ", lora_alpha " + std::to_string(ti.lora_alpha) +
             "); recompile with matching --lora-rank/--lora-alpha";
    return false;
  }
  std::map<std::string, const AdapterTensor *> byKey;
  for (const AdapterTensor &t : tensors)
    byKey[t.key] = &t;
  for (size_t i = 0; i < ti.tensor_count; ++i) {
    tlc_train_tensor_info_t t;
    tlc_module_train_tensor(m, i, &t);
    auto it = byKey.find(t.name);
    if (it == byKey.end()) {
      *error = dir + "/adapter_model.safetensors: missing tensor '" +
               std::string(t.name) + "' (the module trains it)";
      return false;
    }
    const AdapterTensor &a = *it->second;
    if (a.shape.size() != 2 || a.shape[0] != t.rows || a.shape[1] != t.cols) {
      *error = dir + "/adapter_model.safetensors: tensor '" + a.key +
               "' has the wrong shape (expected [" + std::to_string(t.rows) +
               ", " + std::to_string(t.cols) + "])";
      return false;
    }
    std::memcpy(params + t.offset, a.data.data(), 4 * a.data.size());
    byKey.erase(it);
  }
  if (!byKey.empty()) {
    *error = dir + "/adapter_model.safetensors: tensor '" +
             byKey.begin()->first + "' adapts a layer the module does not "
             "train (compile with matching --lora-targets)";
    return false;
  }
  return true;
}

int trainCommand(tlc_module_t *module, const std::string &modulePath,
                 const std::map<std::string, std::string> &options) {
  Options o;
  std::string error;
  if (!parseOptions(options, &o, &error))
    return fail(error);
  tlc_train_info_t ti;
  if (tlc_status_t s = tlc_module_train_info(module, &ti)) {
    fail(tlc_status_message(s));
    tlc_status_free(s);
    return 1;
  }
  tlc_model_info_t mi;
  tlc_module_model_info(module, &mi);
  bool adamw = std::string(ti.optimizer) == "adamw";

  // Data.
  TrainData data;
  Tokenizer tokenize = [&](const std::string &text, std::vector<int32_t> *ids,
                           std::string *err) {
    int32_t *out;
    size_t n;
    if (tlc_status_t s = tlc_tokenize(module, text.data(), text.size(), &out,
                                      &n)) {
      *err = tlc_status_message(s);
      tlc_status_free(s);
      return false;
    }
    ids->assign(out, out + n);
    tlc_free(out);
    return true;
  };
  if (!data.load(o.data, (int)ti.seq_len, tokenize, (int32_t)mi.bos_token_id,
                 (int32_t)mi.eos_token_id, &error))
    return fail(error);
  for (size_t i = 0; i < data.size(); ++i) {
    TrainExample e = data.example(i);
    for (size_t t = 0; t < e.ids.size(); ++t)
      if (e.ids[t] >= mi.vocab_size)
        return fail(o.data + ": token id " + std::to_string(e.ids[t]) +
                    " at sequence " + std::to_string(i) + ", position " +
                    std::to_string(t) + " is outside the vocabulary [0, " +
                    std::to_string(mi.vocab_size) + ")");
  }
  fprintf(stderr,
          "tlc-run: %s: %zu sequences of %u tokens; %u per micro batch, %lld "
          "micro batches per step\n",
          o.data.c_str(), data.size(), ti.seq_len, ti.batch, o.gradAccum);

  tlc_session_options_t so = {o.threads};
  tlc_trainer_t *trainer;
  if (tlc_status_t s = tlc_trainer_create(module, &so, &trainer)) {
    fail(tlc_status_message(s));
    tlc_status_free(s);
    return 1;
  }
  struct Release {
    tlc_trainer_t *t;
    ~Release() { tlc_trainer_release(t); }
  } release{trainer};
  size_t floats;
  float *state = tlc_trainer_state(trainer, &floats);

  // Initial state.
  uint64_t stepsDone = 0;
  if (mkdir(o.out.c_str(), 0777) != 0 && errno != EEXIST)
    return fail(o.out + ": cannot create: " + strerror(errno));
  removeStaleTemporaries(o.out);
  struct stat st;
  if (!o.resume && stat(checkpointPath(o).c_str(), &st) == 0)
    return fail(o.out + " holds the checkpoint of an earlier run: add "
                        "--resume to continue it, or choose another --out");
  if (o.resume) {
    if (!loadCheckpoint(o, state, floats, ti.adapter_elements, &stepsDone,
                        &error))
      return fail(error);
    if (!o.log.empty() && !truncateLog(o.log, stepsDone, &error))
      return fail(error);
    fprintf(stderr, "tlc-run: resuming after step %llu\n",
            (unsigned long long)stepsDone);
  } else if (!o.initAdapter.empty()) {
    if (!loadAdapter(module, o.initAdapter, state, &error))
      return fail(error);
  } else {
    initAdapters(module, state, o.seed);
  }
  if (stepsDone > (uint64_t)o.steps)
    return fail(checkpointPath(o) + ": already past --steps " +
                std::to_string(o.steps));

  FILE *log = nullptr;
  if (!o.log.empty() && !(log = fopen(o.log.c_str(), o.resume ? "a" : "w")))
    return fail(o.log + ": cannot open: " + strerror(errno));
  struct CloseLog {
    FILE *f;
    ~CloseLog() {
      if (f)
        fclose(f);
    }
  } closeLog{log};

  std::vector<int32_t> ids, labels;
  size_t tokensPerMicro = (size_t)ti.seq_len * ti.batch;
  for (long long k = (long long)stepsDone; k < o.steps; ++k) {
    auto t0 = std::chrono::steady_clock::now();
    double lr = o.lr * scheduleFactor(o, k), lossSum = 0;
    tlc_train_hyper_t h{};
    h.lr = (float)lr;
    h.beta1 = (float)o.beta1;
    h.beta2 = (float)o.beta2;
    h.eps = (float)o.eps;
    h.weight_decay = (float)o.weightDecay;
    h.max_grad_norm = (float)o.maxGradNorm;
    h.loss_scale = (float)(1.0 / (double)o.gradAccum);
    if (adamw) {
      double t = (double)(k + 1);
      h.step_size = (float)(lr / (1.0 - std::pow(o.beta1, t)));
      h.bias_correction2_sqrt = (float)std::sqrt(1.0 - std::pow(o.beta2, t));
    }
    for (long long g = 0; g < o.gradAccum; ++g) {
      data.batch((uint64_t)(k * o.gradAccum + g), (int)ti.batch, o.seed,
                 o.shuffle, &ids, &labels);
      h.apply = g + 1 == o.gradAccum;
      float loss;
      if (tlc_status_t s = tlc_trainer_step(trainer, ids.data(), labels.data(),
                                            &h, &loss)) {
        fail(o.data + ": " + tlc_status_message(s));
        tlc_status_free(s);
        return 1;
      }
      lossSum += loss;
    }
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - t0)
                         .count();
    double loss = lossSum / (double)o.gradAccum;
    double tps = (double)(tokensPerMicro * o.gradAccum) / seconds;
    if (!std::isfinite(loss) || !std::isfinite(h.grad_norm))
      return fail("the loss or the gradient norm is not finite at step " +
                  std::to_string(k + 1) +
                  " (lower --lr or set --max-grad-norm); the last checkpoint "
                  "and adapter are kept");
    long long every = std::max(1LL, o.steps / 20);
    if ((k + 1) % every == 0 || k + 1 == o.steps || k == (long long)stepsDone)
      progress(k + 1, o.steps, loss, lr, h.grad_norm, tps);
    if (log) {
      fprintf(log,
              "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": "
              "%.9g, \"tokens_per_s\": %.3f}\n",
              k + 1, loss, lr, h.grad_norm, tps);
      fflush(log);
    }
    bool last = k + 1 == o.steps;
    if ((o.saveEvery > 0 && (k + 1) % o.saveEvery == 0) || last) {
      // The adapter first: a checkpoint never runs ahead of the adapter.
      if (!writeAdapter(module, o, state, &error) ||
          !saveCheckpoint(o, state, floats, ti.adapter_elements,
                          (uint64_t)(k + 1), &error))
        return fail(error);
    }
  }
  if (stepsDone == (uint64_t)o.steps && !writeAdapter(module, o, state, &error))
    return fail(error); // resumed after the last step: rewrite the adapter
  fprintf(stderr, "tlc-run: adapter written to %s (from %s)\n", o.out.c_str(),
          modulePath.c_str());
  return 0;
}

} // namespace tlc::run
