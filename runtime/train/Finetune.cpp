// The fine-tuning library (tlc/finetune.h): data -> micro batches ->
// train_step calls, with the learning-rate schedule, gradient accumulation,
// checkpoints and PEFT output.
//
// A run is a pure function of (module, data, options, seed): the data order
// is derived from the step number (TrainData::batch) and the kernels are
// deterministic, so a checkpoint (state + step) resumes bit-identically.
#include "tlc/finetune.h"
#include "tlc/train_abi.h"
#include "runtime/train/AdapterIO.h"
#include "runtime/train/TrainData.h"

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
#include <map>
#include <memory>
#include <new>
#include <vector>

namespace tlc::train {
namespace {

constexpr char kCheckpointMagic[8] = {'T', 'L', 'C', 'C', 'K', 'P', 'T', '1'};

struct Options {
  std::string data, out, initAdapter, log, schedule = "constant";
  long long steps = 0, saveEvery = 0, warmup = 0, gradAccum = 1;
  uint64_t seed = 0;
  double lr = 0, maxGradNorm = 0, weightDecay = 0, beta1 = 0.9,
         beta2 = 0.999, eps = 1e-8;
  bool resume = false, shuffle = true;
  int threads = 0;
};

bool validate(const tlc_finetune_options_t *in, Options *o,
              std::string *error) {
  auto str = [](const char *s) { return s ? std::string(s) : std::string(); };
  o->data = str(in->data);
  o->out = str(in->out_dir);
  o->initAdapter = str(in->init_adapter);
  o->log = str(in->log_path);
  o->schedule = in->schedule ? in->schedule : "constant";
  o->steps = in->steps;
  o->saveEvery = in->save_every;
  o->warmup = in->warmup;
  o->gradAccum = in->grad_accum;
  o->seed = in->seed;
  o->lr = in->lr;
  o->maxGradNorm = in->max_grad_norm;
  o->weightDecay = in->weight_decay;
  o->beta1 = in->beta1;
  o->beta2 = in->beta2;
  o->eps = in->eps;
  o->resume = in->resume;
  o->shuffle = in->shuffle;
  o->threads = in->num_threads;
  if (o->data.empty() || o->out.empty() || o->steps < 1) {
    *error = "fine-tuning needs data, an output folder and steps >= 1";
    return false;
  }
  if (o->schedule != "constant" && o->schedule != "linear" &&
      o->schedule != "cosine") {
    *error = "the schedule must be constant, linear or cosine";
    return false;
  }
  if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) ||
      !(o->eps > 0)) {
    *error = "beta1 and beta2 must be in [0, 1) and eps positive";
    return false;
  }
  if (!(o->lr >= 0) || !(o->maxGradNorm >= 0) || !(o->weightDecay >= 0) ||
      !std::isfinite(o->lr) || !std::isfinite(o->maxGradNorm) ||
      !std::isfinite(o->weightDecay)) {
    *error = "lr, max_grad_norm and weight_decay must be finite and >= 0";
    return false;
  }
  if (o->gradAccum < 1 || o->warmup < 0 || o->saveEvery < 0 ||
      o->threads < 0) {
    *error = "grad_accum must be >= 1; warmup, save_every and threads >= 0";
    return false;
  }
  if (o->resume && !o->initAdapter.empty()) {
    *error = "resume continues from the checkpoint; drop init_adapter";
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
    tlc_status_free(tlc_module_train_tensor(m, i, &t));
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
  tlc_status_free(tlc_module_model_info(m, &mi));
  AdapterConfig cfg;
  cfg.rank = ti.lora_rank;
  cfg.alpha = ti.lora_alpha;
  cfg.base_model = mi.name;
  for (size_t i = 0; i < ti.target_count; ++i)
  {
    const char *name = "";
    tlc_status_free(tlc_module_train_target(m, i, &name));
    cfg.targets.push_back(name);
  }
  std::vector<AdapterTensor> tensors;
  for (size_t i = 0; i < ti.tensor_count; ++i) {
    tlc_train_tensor_info_t t;
    tlc_status_free(tlc_module_train_tensor(m, i, &t));
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
    tlc_status_free(tlc_module_train_tensor(m, i, &t));
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

} // namespace
} // namespace tlc::train

using namespace tlc::train;

struct tlc_finetune_s {
  tlc_module_t *module = nullptr;
  Options o;
  tlc_train_info_t ti{};
  bool adamw = false;
  TrainData data;
  tlc_trainer_t *trainer = nullptr;
  float *state = nullptr;
  size_t floats = 0;
  uint64_t stepsDone = 0;
  FILE *log = nullptr;
  std::vector<int32_t> ids, labels;

  ~tlc_finetune_s() {
    if (log)
      fclose(log);
    if (trainer)
      tlc_trainer_release(trainer);
  }
};

static tlc_status_t failStatus(tlc_status_code_t code,
                               const std::string &msg) {
  return tlc_status_create(code, msg.c_str());
}

/// The code of an error from the file helpers (data, checkpoint, adapter).
static tlc_status_t fileError(const std::string &msg) {
  tlc_status_code_t code = TLC_STATUS_INVALID_FILE;
  if (msg.find("cannot open") != std::string::npos)
    code = TLC_STATUS_NOT_FOUND;
  else if (msg.find("cannot create") != std::string::npos ||
           msg.find("cannot write") != std::string::npos ||
           msg.find("failed") != std::string::npos)
    code = TLC_STATUS_IO_ERROR;
  return failStatus(code, msg);
}

extern "C" void tlc_finetune_options_default(tlc_finetune_options_t *o) {
  *o = tlc_finetune_options_t{};
  o->schedule = "constant";
  o->grad_accum = 1;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->eps = 1e-8;
  o->shuffle = true;
}

extern "C" tlc_status_t
tlc_finetune_create(tlc_module_t *module, const tlc_finetune_options_t *opts,
                    tlc_finetune_t **out) {
  *out = nullptr;
  if (!module || !opts)
    return failStatus(TLC_STATUS_INVALID_ARGUMENT, "tlc_finetune_create: null module or options");
  auto ft = std::unique_ptr<tlc_finetune_s>(new (std::nothrow) tlc_finetune_s);
  if (!ft)
    return failStatus(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
  ft->module = module;
  Options &o = ft->o;
  std::string error;
  if (!validate(opts, &o, &error))
    return failStatus(TLC_STATUS_INVALID_ARGUMENT, error);
  if (tlc_status_t s = tlc_module_train_info(module, &ft->ti))
    return s;
  const tlc_train_info_t &ti = ft->ti;
  tlc_model_info_t mi;
  tlc_status_free(tlc_module_model_info(module, &mi));
  ft->adamw = std::string(ti.optimizer) == "adamw";

  // Data.
  Tokenizer tokenize = [&](const std::string &text, std::vector<int32_t> *ids,
                           std::string *err) {
    int32_t *toks;
    size_t n;
    if (tlc_status_t s =
            tlc_tokenize(module, text.data(), text.size(), &toks, &n)) {
      *err = tlc_status_message(s);
      tlc_status_free(s);
      return false;
    }
    ids->assign(toks, toks + n);
    tlc_free(toks);
    return true;
  };
  if (!ft->data.load(o.data, (int)ti.seq_len, tokenize,
                     (int32_t)mi.bos_token_id, (int32_t)mi.eos_token_id,
                     &error))
    return fileError(error);
  for (size_t i = 0; i < ft->data.size(); ++i) {
    TrainExample e = ft->data.example(i);
    for (size_t t = 0; t < e.ids.size(); ++t)
      if (e.ids[t] >= mi.vocab_size)
        return failStatus(TLC_STATUS_INVALID_FILE, o.data + ": token id " + std::to_string(e.ids[t]) +
                          " at sequence " + std::to_string(i) +
                          ", position " + std::to_string(t) +
                          " is outside the vocabulary [0, " +
                          std::to_string(mi.vocab_size) + ")");
  }

  tlc_session_options_t so = {o.threads};
  if (tlc_status_t s = tlc_trainer_create(module, &so, &ft->trainer))
    return s;
  ft->state = tlc_trainer_state(ft->trainer, &ft->floats);

  // Initial state.
  if (mkdir(o.out.c_str(), 0777) != 0 && errno != EEXIST)
    return failStatus(TLC_STATUS_IO_ERROR, o.out + ": cannot create: " + strerror(errno));
  removeStaleTemporaries(o.out);
  struct stat st;
  if (!o.resume && stat(checkpointPath(o).c_str(), &st) == 0)
    return failStatus(TLC_STATUS_FAILED_PRECONDITION, o.out + " holds the checkpoint of an earlier run: add "
                              "--resume to continue it, or choose another "
                              "--out");
  if (o.resume) {
    if (!loadCheckpoint(o, ft->state, ft->floats, ti.adapter_elements,
                        &ft->stepsDone, &error))
      return fileError(error);
    if (!o.log.empty() && !truncateLog(o.log, ft->stepsDone, &error))
      return fileError(error);
  } else if (!o.initAdapter.empty()) {
    if (!loadAdapter(module, o.initAdapter, ft->state, &error))
      return fileError(error);
  } else {
    initAdapters(module, ft->state, o.seed);
  }
  if (ft->stepsDone > (uint64_t)o.steps)
    return failStatus(TLC_STATUS_FAILED_PRECONDITION, checkpointPath(o) + ": already past --steps " +
                      std::to_string(o.steps));
  if (!o.log.empty() &&
      !(ft->log = fopen(o.log.c_str(), o.resume ? "a" : "w")))
    return failStatus(TLC_STATUS_IO_ERROR, o.log + ": cannot open: " + strerror(errno));
  *out = ft.release();
  return nullptr;
}

extern "C" void tlc_finetune_info(const tlc_finetune_t *ft,
                                  tlc_finetune_info_t *out) {
  out->sequences = ft->data.size();
  out->seq_len = ft->ti.seq_len;
  out->batch = ft->ti.batch;
  out->steps_done = (int64_t)ft->stepsDone;
  out->steps = ft->o.steps;
}

extern "C" bool tlc_finetune_done(const tlc_finetune_t *ft) {
  return ft->stepsDone >= (uint64_t)ft->o.steps;
}

extern "C" tlc_status_t tlc_finetune_step(tlc_finetune_t *ft,
                                          tlc_finetune_progress_t *out) {
  const Options &o = ft->o;
  if (tlc_finetune_done(ft))
    return failStatus(TLC_STATUS_FAILED_PRECONDITION, "fine-tuning already did its " +
                      std::to_string(o.steps) + " steps");
  long long k = (long long)ft->stepsDone;
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
  if (ft->adamw) { // bias correction of AdamW, folded into two scalars
    double t = (double)(k + 1);
    h.step_size = (float)(lr / (1.0 - std::pow(o.beta1, t)));
    h.bias_correction2_sqrt = (float)std::sqrt(1.0 - std::pow(o.beta2, t));
  }
  for (long long g = 0; g < o.gradAccum; ++g) {
    ft->data.batch((uint64_t)(k * o.gradAccum + g), (int)ft->ti.batch, o.seed,
                   o.shuffle, &ft->ids, &ft->labels);
    h.apply = g + 1 == o.gradAccum;
    float loss;
    if (tlc_status_t s = tlc_trainer_step(ft->trainer, ft->ids.data(),
                                          ft->labels.data(), &h, &loss)) {
      std::string msg = o.data + ": " + tlc_status_message(s);
      tlc_status_code_t code = tlc_status_code(s);
      tlc_status_free(s);
      return failStatus(code, msg);
    }
    lossSum += loss;
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  double loss = lossSum / (double)o.gradAccum;
  double tps = (double)((size_t)ft->ti.seq_len * ft->ti.batch * o.gradAccum) /
               std::max(seconds, 1e-9);
  if (!std::isfinite(loss) || !std::isfinite(h.grad_norm))
    return failStatus(TLC_STATUS_FAILED_PRECONDITION, "the loss or the gradient norm is not finite at step " +
                      std::to_string(k + 1) +
                      " (lower --lr or set --max-grad-norm); the last "
                      "checkpoint and adapter are kept");
  ft->stepsDone = (uint64_t)(k + 1);
  if (out)
    *out = {k + 1, o.steps, loss, lr, (double)h.grad_norm, tps};
  if (ft->log) {
    fprintf(ft->log,
            "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": "
            "%.9g, \"tokens_per_s\": %.3f}\n",
            k + 1, loss, lr, h.grad_norm, tps);
    fflush(ft->log);
  }
  bool last = k + 1 == o.steps;
  if ((o.saveEvery > 0 && (k + 1) % o.saveEvery == 0) || last) {
    // The adapter first: a checkpoint never runs ahead of the adapter.
    std::string error;
    if (!writeAdapter(ft->module, o, ft->state, &error) ||
        !saveCheckpoint(o, ft->state, ft->floats, ft->ti.adapter_elements,
                        (uint64_t)(k + 1), &error))
      return fileError(error);
  }
  return nullptr;
}

extern "C" tlc_status_t tlc_finetune_save_adapter(tlc_finetune_t *ft) {
  std::string error;
  if (!writeAdapter(ft->module, ft->o, ft->state, &error))
    return fileError(error);
  return nullptr;
}

extern "C" void tlc_finetune_release(tlc_finetune_t *ft) { delete ft; }

extern "C" tlc_status_t tlc_adapter_load(tlc_module_t *module,
                                         const char *dir, float *params) {
  if (!module || !dir || !params)
    return failStatus(TLC_STATUS_INVALID_ARGUMENT, "tlc_adapter_load: null argument");
  std::string error;
  if (!loadAdapter(module, dir, params, &error))
    return fileError(error);
  return nullptr;
}
