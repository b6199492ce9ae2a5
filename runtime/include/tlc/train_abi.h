/*
 * The training ABI between compiled kernels and the runtime: the block of
 * hyper-parameters the runtime fills before each train_step call, bound to
 * the kernels that need it (space Hyper of the module), and the layout of the
 * training state. Plain C, no dependencies: the kernels (compiled to bitcode)
 * and the runtime both include it.
 *
 * Training state (space State), float32, P = total adapter elements:
 *   [0, P)    adapter parameters, tensor after tensor (Module.train.tensors)
 *   [P, 2P)   their accumulated gradients
 *   [2P, 3P)  AdamW first moments   (AdamW only)
 *   [3P, 4P)  AdamW second moments  (AdamW only)
 */
#ifndef TLC_TRAIN_ABI_H
#define TLC_TRAIN_ABI_H

#include <stdint.h>

typedef struct {
  float lr;             /* learning rate of this step */
  float beta1, beta2;   /* AdamW */
  float eps;            /* AdamW */
  float weight_decay;   /* AdamW: decoupled; SGD: L2 added to the gradient */
  float max_grad_norm;  /* <= 0: no clipping */
  float loss_scale;     /* d(mean loss) is multiplied by this (1/G with G
                           accumulation steps) */
  float step_size;      /* AdamW: lr / (1 - beta1^step) */
  float bias_correction2_sqrt; /* AdamW: sqrt(1 - beta2^step) */
  int32_t apply;        /* 0: accumulate gradients only, no update */
  float grad_norm;      /* out: L2 norm of the accumulated gradients, before
                           clipping (set when apply != 0) */
  float reserved[5];
} tlc_train_hyper_t;

#endif /* TLC_TRAIN_ABI_H */
