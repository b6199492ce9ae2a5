/*
 * finetune: LoRA fine-tuning of a tlc training module on a text, JSONL or
 * .npy file, writing a PEFT adapter (adapter_config.json +
 * adapter_model.safetensors) that transformers + PEFT load as is.
 *
 *   tlc compile MODEL --train --lora-rank 8 --lora-alpha 16 \
 *       --seq-len 128 --batch 4 -o train.tlm
 *   finetune train.tlm data.txt adapter/ [steps] [lr]
 *
 * Uses only the installed C API: tlc/tlc.h (modules) and tlc/finetune.h.
 * Run it again with the same arguments after an interruption: it resumes
 * from adapter/checkpoint.tlcstate and ends with the same bytes.
 */
#include <tlc/finetune.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int report(tlc_status_t status) {
  fprintf(stderr, "finetune: %s\n", tlc_status_message(status));
  tlc_status_free(status);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 6) {
    fprintf(stderr, "usage: %s TRAIN.tlm DATA OUT_DIR [STEPS] [LR]\n", argv[0]);
    return 2;
  }
  const char *module_path = argv[1], *data = argv[2], *out_dir = argv[3];
  long steps = argc > 4 ? strtol(argv[4], NULL, 10) : 100;
  double lr = argc > 5 ? strtod(argv[5], NULL) : 1e-3;
  if (steps < 1 || !(lr > 0)) {
    fprintf(stderr, "finetune: STEPS must be >= 1 and LR > 0\n");
    return 2;
  }

  tlc_module_t *module;
  tlc_status_t status = tlc_module_load_file(module_path, &module);
  if (status)
    return report(status);

  tlc_finetune_options_t options;
  tlc_finetune_options_default(&options);
  options.data = data;
  options.out_dir = out_dir;
  options.steps = steps;
  options.lr = lr;
  options.schedule = "cosine";
  options.warmup = steps / 10;
  options.max_grad_norm = 1.0;
  options.save_every = 10;
  options.seed = 1;
  char checkpoint[4096];
  struct stat st;
  snprintf(checkpoint, sizeof checkpoint, "%s/checkpoint.tlcstate", out_dir);
  options.resume = stat(checkpoint, &st) == 0; /* continue an earlier run */

  tlc_finetune_t *ft;
  status = tlc_finetune_create(module, &options, &ft);
  if (status) {
    tlc_module_release(module);
    return report(status);
  }
  tlc_finetune_info_t info;
  tlc_finetune_info(ft, &info);
  printf("%zu sequences of %u tokens, batch %u, steps %lld..%lld\n",
         info.sequences, info.seq_len, info.batch,
         (long long)info.steps_done + 1, (long long)info.steps);

  int rc = 0;
  while (!tlc_finetune_done(ft)) {
    tlc_finetune_progress_t p;
    status = tlc_finetune_step(ft, &p);
    if (status) {
      rc = report(status);
      break;
    }
    if (p.step % 10 == 0 || p.step == p.steps)
      printf("step %lld/%lld loss %.4f lr %.2e %.0f tokens/s\n",
             (long long)p.step, (long long)p.steps, p.loss, p.lr,
             p.tokens_per_s);
  }
  if (rc == 0 && info.steps_done == info.steps) {
    status = tlc_finetune_save_adapter(ft); /* resumed after the end */
    if (status)
      rc = report(status);
  }
  tlc_finetune_release(ft);
  tlc_module_release(module);
  if (rc == 0)
    printf("PEFT adapter written to %s\n", out_dir);
  return rc;
}
