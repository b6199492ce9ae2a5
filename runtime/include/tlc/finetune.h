/*
 * tlc fine-tuning library (libtlctrain): LoRA fine-tuning of a training
 * module (tlc compile --train) on the device, writing PEFT adapters.
 *
 * The loop: data (token ids from .npy, JSONL with "text" or
 * "prompt"/"completion" (loss on the completion only), or plain text;
 * packed into the module's sequence length), a seeded epoch order, the
 * learning-rate schedule with warmup, gradient accumulation, clipping,
 * AdamW with bias correction (or SGD, as compiled), checkpoints every
 * save_every steps and at the end, bit-identical resume from them.
 * A run is a pure function of (module, data, options): a killed run resumed
 * with the same options gives the same bytes as an uninterrupted one.
 *
 * Conventions as in tlc.h: calls return NULL or a status to free.
 */
#ifndef TLC_FINETUNE_H
#define TLC_FINETUNE_H

#include "tlc/tlc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tlc_finetune_s tlc_finetune_t;

typedef struct {
  const char *data;         /* required: .npy, .jsonl or text file */
  const char *out_dir;      /* required: the adapter and checkpoint.tlcstate */
  int64_t steps;            /* required: optimizer steps, >= 1 */
  double lr;                /* required: peak learning rate, >= 0 */
  const char *schedule;     /* "constant" (default), "linear" or "cosine" */
  int64_t warmup;           /* steps of linear warmup (0) */
  int64_t grad_accum;       /* micro batches per optimizer step (1) */
  int64_t save_every;       /* checkpoint period in steps; 0: at the end */
  double max_grad_norm;     /* global norm clipping; 0: none */
  double weight_decay;      /* AdamW decoupled decay (0) */
  double beta1, beta2, eps; /* AdamW (0.9, 0.999, 1e-8) */
  uint64_t seed;            /* adapter init and data order (0) */
  bool shuffle;             /* shuffle each epoch (true) */
  bool resume;              /* continue from out_dir/checkpoint.tlcstate */
  const char *init_adapter; /* a PEFT folder to start from, or NULL */
  const char *log_path;     /* JSON lines per step, or NULL */
  int32_t num_threads;      /* 0: the module's default */
} tlc_finetune_options_t;

/* Fills *out with the defaults above (required fields zero/NULL). */
TLC_API void tlc_finetune_options_default(tlc_finetune_options_t *out);

/* Validates the options, loads and checks the data, creates out_dir,
 * initializes the adapters (PEFT's init, init_adapter, or the checkpoint
 * when resuming). Refuses an out_dir holding an earlier run's checkpoint
 * unless resume is set. `module` must outlive the returned object. */
TLC_API tlc_status_t tlc_finetune_create(tlc_module_t *module,
                                         const tlc_finetune_options_t *options,
                                         tlc_finetune_t **out);

typedef struct {
  size_t sequences;       /* packed training sequences in the data */
  uint32_t seq_len, batch; /* of one micro batch */
  int64_t steps_done;     /* optimizer steps done (resumed runs: > 0) */
  int64_t steps;
} tlc_finetune_info_t;
TLC_API void tlc_finetune_info(const tlc_finetune_t *ft,
                               tlc_finetune_info_t *out);

typedef struct {
  int64_t step, steps; /* the step just done (1-based) of steps */
  double loss, lr, grad_norm, tokens_per_s;
} tlc_finetune_progress_t;

/* Runs one optimizer step (grad_accum micro batches), logs it, and writes
 * the adapter then the checkpoint when the step is a save point or the
 * last one. Calling it after the last step is an error. */
TLC_API tlc_status_t tlc_finetune_step(tlc_finetune_t *ft,
                                       tlc_finetune_progress_t *out);
TLC_API bool tlc_finetune_done(const tlc_finetune_t *ft);

/* Writes the adapter now (also after a resume past the last step). */
TLC_API tlc_status_t tlc_finetune_save_adapter(tlc_finetune_t *ft);
TLC_API void tlc_finetune_release(tlc_finetune_t *ft);

/* Reads the PEFT adapter folder `dir` into `params` (the module's adapter
 * layout: tlc_module_train_tensor offsets, e.g. tlc_session_adapters): every
 * tensor the module has, with the module's rank and scaling, nothing else. */
TLC_API tlc_status_t tlc_adapter_load(tlc_module_t *module, const char *dir,
                                      float *params);

#ifdef __cplusplus
}
#endif

#endif /* TLC_FINETUNE_H */
