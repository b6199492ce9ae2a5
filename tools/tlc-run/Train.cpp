// tlc-run train: options -> tlc_finetune_options_t, then the library's loop
// with a progress bar and one line per reported step.
#include "tools/tlc-run/Train.h"

#include "tlc/finetune.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <unistd.h>

namespace tlc::run {
namespace {

int fail(const std::string &msg) {
  fprintf(stderr, "tlc-run: error: %s\n", msg.c_str());
  return 1;
}

int failStatus(tlc_status_t s) {
  int rc = fail(tlc_status_message(s));
  tlc_status_free(s);
  return rc;
}

/// Parses the --options into `o` (strings point into `m`).
bool parseOptions(const std::map<std::string, std::string> &m,
                  tlc_finetune_options_t *o, std::string *error) {
  static const std::set<std::string> known = {
      "--data",         "--steps",      "--lr",          "--out",
      "--init-adapter", "--save-every", "--resume",      "--seed",
      "--schedule",     "--warmup",     "--grad-accum",  "--max-grad-norm",
      "--weight-decay", "--beta1",      "--beta2",       "--eps",
      "--log",          "--shuffle",    "--threads"};
  for (auto &[k, v] : m)
    if (!known.count(k)) {
      *error = "train: unknown option " + k;
      return false;
    }
  auto str = [&](const char *k, const char **v) {
    auto it = m.find(k);
    if (it != m.end())
      *v = it->second.c_str();
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
  auto integer = [&](const char *k, int64_t *v, long long min) {
    auto it = m.find(k);
    if (it == m.end())
      return true;
    char *end;
    long long x = strtoll(it->second.c_str(), &end, 10);
    if (it->second.empty() || *end || x < min) {
      *error = std::string(k) + ": expected an integer >= " +
               std::to_string(min) + ", got '" + it->second + "'";
      return false;
    }
    *v = x;
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
  int64_t seed = 0, threads = 0;
  str("--data", &o->data);
  str("--out", &o->out_dir);
  str("--init-adapter", &o->init_adapter);
  str("--schedule", &o->schedule);
  str("--log", &o->log_path);
  if (!integer("--steps", &o->steps, 1) || !num("--lr", &o->lr) ||
      !integer("--save-every", &o->save_every, 0) ||
      !integer("--seed", &seed, 0) || !integer("--warmup", &o->warmup, 0) ||
      !integer("--grad-accum", &o->grad_accum, 1) ||
      !num("--max-grad-norm", &o->max_grad_norm) ||
      !num("--weight-decay", &o->weight_decay) || !num("--beta1", &o->beta1) ||
      !num("--beta2", &o->beta2) || !num("--eps", &o->eps) ||
      !flag("--resume", &o->resume) || !flag("--shuffle", &o->shuffle) ||
      !integer("--threads", &threads, 0))
    return false;
  o->seed = (uint64_t)seed;
  o->num_threads = (int32_t)threads;
  if (!o->data || !o->out_dir || !m.count("--steps") || !m.count("--lr")) {
    *error = "train needs --data FILE, --steps N, --lr LR and --out DIR";
    return false;
  }
  return true; // the library validates the values (tlc_finetune_create)
}

void progress(const tlc_finetune_progress_t &p) {
  if (isatty(2)) {
    int width = 24;
    int done = (int)(width * p.step / std::max<int64_t>(1, p.steps));
    fprintf(stderr, "\r[%.*s%*s] %lld/%lld loss %.4f  %.0f tok/s ", done,
            "========================", width - done, "", (long long)p.step,
            (long long)p.steps, p.loss, p.tokens_per_s);
    if (p.step == p.steps)
      fprintf(stderr, "\n");
  }
  printf("step %lld/%lld loss %.6f lr %.6g grad_norm %.6g tokens/s %.1f\n",
         (long long)p.step, (long long)p.steps, p.loss, p.lr, p.grad_norm,
         p.tokens_per_s);
  fflush(stdout);
}

} // namespace

int trainCommand(tlc_module_t *module, const std::string &modulePath,
                 const std::map<std::string, std::string> &options) {
  tlc_finetune_options_t o;
  tlc_finetune_options_default(&o);
  std::string error;
  if (!parseOptions(options, &o, &error))
    return fail(error);
  tlc_finetune_t *ft;
  if (tlc_status_t s = tlc_finetune_create(module, &o, &ft))
    return failStatus(s);
  struct Release {
    tlc_finetune_t *ft;
    ~Release() { tlc_finetune_release(ft); }
  } release{ft};
  tlc_finetune_info_t info;
  tlc_finetune_info(ft, &info);
  fprintf(stderr,
          "tlc-run: %s: %zu sequences of %u tokens; %u per micro batch, %lld "
          "micro batches per step\n",
          o.data, info.sequences, info.seq_len, info.batch,
          (long long)o.grad_accum);
  if (o.resume)
    fprintf(stderr, "tlc-run: resuming after step %lld\n",
            (long long)info.steps_done);
  int64_t first = info.steps_done;
  int64_t every = std::max<int64_t>(1, o.steps / 20);
  while (!tlc_finetune_done(ft)) {
    tlc_finetune_progress_t p;
    if (tlc_status_t s = tlc_finetune_step(ft, &p))
      return failStatus(s);
    if (p.step % every == 0 || p.step == p.steps || p.step == first + 1)
      progress(p);
  }
  if (first == o.steps) // resumed after the last step: rewrite the adapter
    if (tlc_status_t s = tlc_finetune_save_adapter(ft))
      return failStatus(s);
  fprintf(stderr, "tlc-run: adapter written to %s (from %s)\n", o.out_dir,
          modulePath.c_str());
  return 0;
}

} // namespace tlc::run
