/*
 * tlc runtime C API: load a compiled .tlm module, create sessions, run
 * prefill and decode, read logits, tokenize and detokenize.
 *
 * Conventions: every call that can fail returns a tlc_status_t, NULL on
 * success; a non-NULL status owns a message and must be freed with
 * tlc_status_free. Outputs go through out_ parameters. Objects are created
 * by tlc_*_create/load and freed by the matching release; the comment above
 * each call says who owns what.
 */
#ifndef TLC_TLC_H
#define TLC_TLC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef TLC_API
#define TLC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tlc_status_s *tlc_status_t;
typedef struct tlc_module_s tlc_module_t;
typedef struct tlc_session_s tlc_session_t;

/* What kind of failure a status is (NULL statuses are TLC_STATUS_OK). */
typedef enum {
  TLC_STATUS_OK = 0,
  TLC_STATUS_INVALID_ARGUMENT = 1, /* null, out of range, bad token id, bad option */
  TLC_STATUS_NOT_FOUND = 2,        /* a missing file, or a part the module lacks */
  TLC_STATUS_INVALID_FILE = 3,     /* a malformed or corrupt module, checkpoint,
                                      adapter or data file */
  TLC_STATUS_INCOMPATIBLE = 4,     /* another module version, or no executable
                                      this device runs */
  TLC_STATUS_OUT_OF_MEMORY = 5,
  TLC_STATUS_IO_ERROR = 6,         /* a read, write or map failed */
  TLC_STATUS_FAILED_PRECONDITION = 7, /* a call out of order */
  TLC_STATUS_INTERNAL = 8,
} tlc_status_code_t;

/* The code and message of a failed call (owned by the status). */
TLC_API tlc_status_code_t tlc_status_code(tlc_status_t status);
TLC_API const char *tlc_status_message(tlc_status_t status);
TLC_API void tlc_status_free(tlc_status_t status);
/* A failed status with a copy of `message` (for libraries built on this
 * API, such as the fine-tuning library). Never NULL for a code other than
 * OK: out of memory, it returns a static out-of-memory status that
 * tlc_status_free ignores. */
TLC_API tlc_status_t tlc_status_create(tlc_status_code_t code,
                                       const char *message);

/* Kernels linked into the app (tlc compile --output-format=static-lib, for
 * platforms that forbid loading code): OUT.h declares each executable's
 * table and a function registering them all. Register before loading the
 * module; tables must stay valid for the life of the process. Registering
 * a name twice with another table is TLC_STATUS_INVALID_ARGUMENT. */
typedef void (*tlc_kernel_fn)(void **bindings, const int64_t *scalars,
                              int64_t begin, int64_t end);
typedef struct {
  const char *name; /* NULL ends the table */
  tlc_kernel_fn fn;
} tlc_static_kernel_t;
TLC_API tlc_status_t tlc_static_library_register(
    const char *symbol, const tlc_static_kernel_t *kernels);

/* Frees memory the runtime returned to the caller (token ids, text). */
TLC_API void tlc_free(void *ptr);

/* Maps and verifies a module file. The caller owns *out_module. */
TLC_API tlc_status_t tlc_module_load_file(const char *path,
                                          tlc_module_t **out_module);

/* Verifies a module held in memory. The bytes are borrowed: they must stay
 * valid and unchanged until the module is released. */
TLC_API tlc_status_t tlc_module_load_memory(const void *data, size_t size,
                                            tlc_module_t **out_module);

TLC_API void tlc_module_release(tlc_module_t *module);

typedef struct {
  const char *name;         /* model folder name */
  const char *architecture; /* "BitNetForCausalLM" */
  const char *weight_format;
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
      num_kv_heads, head_dim, max_seq, parameter_count;
  int64_t bos_token_id, eos_token_id; /* -1 when unknown */
  double rope_theta;
  float rms_norm_eps;
  bool tied_embeddings;
  bool has_tokenizer;
  uint64_t file_size, data_size, kv_cache_size;
  uint32_t default_threads; /* threads when a session asks for 0 (0: all) */
  const char *device;       /* the device profile compiled for, or "" */
} tlc_model_info_t;

/* Strings stay owned by the module. Getters check their arguments: a null
 * module or out, or an index past the count, is TLC_STATUS_INVALID_ARGUMENT. */
TLC_API tlc_status_t tlc_module_model_info(const tlc_module_t *module,
                                           tlc_model_info_t *out);

typedef struct {
  const char *target, *cpu, *format;
  const char *needs; /* CPU features it requires, comma-separated */
  uint64_t image_size;
  size_t kernel_count;
  bool selected; /* the one this host runs */
  /* Why a driver of this runtime does not run it here ("" when it runs or no
   * driver took it), and whether that driver is a GPU's: a module whose GPU
   * executable does not fit the device runs its CPU one, and says why. */
  const char *not_run;
  bool gpu;
} tlc_executable_info_t;

typedef struct {
  const char *name;
  uint32_t max_tokens;
  uint64_t arena_size;
  size_t dispatch_count;
} tlc_entry_info_t;

/* Counts are 0 for a null module. */
TLC_API size_t tlc_module_executable_count(const tlc_module_t *module);
TLC_API tlc_status_t tlc_module_executable_info(const tlc_module_t *module,
                                                size_t i,
                                                tlc_executable_info_t *out);
TLC_API size_t tlc_module_entry_count(const tlc_module_t *module);
TLC_API tlc_status_t tlc_module_entry_info(const tlc_module_t *module, size_t i,
                                           tlc_entry_info_t *out);

typedef struct {
  int32_t num_threads; /* 0: all hardware threads */
} tlc_session_options_t;

/* A session owns its arena, KV cache and threads; it keeps `module`
 * referenced (release the session before the module). */
TLC_API tlc_status_t tlc_session_create(tlc_module_t *module,
                                        const tlc_session_options_t *options,
                                        tlc_session_t **out_session);
TLC_API void tlc_session_release(tlc_session_t *session);

/* The adapter parameters of a module with LoRA adapters (float32, layout
 * of tlc_module_train_tensor), zero (= the base model) until the caller
 * writes them; NULL when the module has none. */
TLC_API float *tlc_session_adapters(tlc_session_t *session,
                                    size_t *out_floats);

/* Forgets the KV cache: the next prefill starts at position 0. */
TLC_API void tlc_session_reset(tlc_session_t *session);
TLC_API size_t tlc_session_position(const tlc_session_t *session);

/* Appends `count` tokens at the current position (batched, in chunks of the
 * module's max_tokens). Logits are kept for every token when all_logits,
 * else for the last one only. */
TLC_API tlc_status_t tlc_session_prefill(tlc_session_t *session,
                                         const int32_t *ids, size_t count,
                                         bool all_logits);

/* Appends one token; keeps its logits. */
TLC_API tlc_status_t tlc_session_decode(tlc_session_t *session, int32_t id);

/* Logits of the last prefill/decode, [*out_rows x *out_vocab] float32,
 * owned by the session and valid until its next call. */
TLC_API const float *tlc_session_logits(const tlc_session_t *session,
                                        size_t *out_rows, size_t *out_vocab);

/* Encodes UTF-8 text with the module's tokenizer (no BOS added).
 * *out_ids is owned by the caller (tlc_free). */
TLC_API tlc_status_t tlc_tokenize(const tlc_module_t *module, const char *text,
                                  size_t length, int32_t **out_ids,
                                  size_t *out_count);

/* Decodes ids to UTF-8 text; *out_text (NUL-terminated) is owned by the
 * caller (tlc_free). */
TLC_API tlc_status_t tlc_detokenize(const tlc_module_t *module,
                                    const int32_t *ids, size_t count,
                                    char **out_text, size_t *out_length);

/*
 * Training (modules compiled with tlc compile --train). A trainer runs the
 * module's train_step: forward, backward and optimizer update of the LoRA
 * adapters, on batch x seq_len tokens per call.
 */
typedef struct tlc_trainer_s tlc_trainer_t;

typedef struct {
  uint32_t seq_len, batch;
  const char *optimizer; /* "adamw" or "sgd" */
  int32_t lora_rank;
  float lora_alpha;
  size_t target_count, tensor_count;
  uint64_t adapter_elements; /* P */
  uint64_t state_size;       /* bytes of the training state */
  uint64_t arena_size;       /* bytes of train_step's scratch memory */
  bool has_train_step;       /* false: inference with adapter slots */
} tlc_train_info_t;

typedef struct {
  const char *name; /* PEFT key, e.g. base_model.model.model.layers.0.
                       self_attn.q_proj.lora_A.weight */
  int64_t rows, cols;
  uint64_t offset; /* float32 elements into the state's parameters */
} tlc_train_tensor_info_t;

/* LoRA adapters of a module compiled with --train or --lora-rank. Fails
 * (with a message) when the module has none. */
TLC_API tlc_status_t tlc_module_train_info(const tlc_module_t *module,
                                           tlc_train_info_t *out);
/* Target module name i (< target_count), e.g. "q_proj". */
TLC_API tlc_status_t tlc_module_train_target(const tlc_module_t *module,
                                             size_t i, const char **out_name);
TLC_API tlc_status_t tlc_module_train_tensor(const tlc_module_t *module,
                                             size_t i,
                                             tlc_train_tensor_info_t *out);

/* The trainer owns the training state (zeroed), its arena and threads; it
 * uses `module` (release the trainer before the module). */
TLC_API tlc_status_t tlc_trainer_create(tlc_module_t *module,
                                        const tlc_session_options_t *options,
                                        tlc_trainer_t **out_trainer);
TLC_API void tlc_trainer_release(tlc_trainer_t *trainer);

/* The training state (layout in tlc/train_abi.h): read and write it to
 * initialize adapters, save them, checkpoint and resume. */
TLC_API float *tlc_trainer_state(tlc_trainer_t *trainer, size_t *out_floats);

/* One call of train_step on batch * seq_len tokens: ids, and labels (the
 * token each position must predict; negative = ignored). `hyper` points to
 * a tlc_train_hyper_t (tlc/train_abi.h) that the caller fills; the step
 * accumulates gradients, and with hyper->apply also updates the adapters
 * (and sets hyper->grad_norm). *out_loss: the mean loss of the batch. */
TLC_API tlc_status_t tlc_trainer_step(tlc_trainer_t *trainer,
                                      const int32_t *ids,
                                      const int32_t *labels, void *hyper,
                                      float *out_loss);

#ifdef __cplusplus
}
#endif

#endif /* TLC_TLC_H */
