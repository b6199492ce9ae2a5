// Passes of the tlora dialect that do not depend on a target.
#ifndef TLORA_PASSES_TD
#define TLORA_PASSES_TD

include "mlir/Pass/PassBase.td"

def DecomposeLinearPass : Pass<"tlora-decompose-linear", "ModuleOp"> {
  let summary = "Splits ternary_linear into quantize + ternary_matmul";
  let description = [{
    `tlora.ternary_linear %x, %w` becomes
    `tlora.ternary_matmul (tlora.quantize %x), %w`, so that layers reading
    the same input (q/k/v, gate/up) share one quantization after CSE.
  }];
  let dependentDialects = ["::mlir::tlora::TloraDialect"];
}

def DifferentiatePass : Pass<"tlora-differentiate", "ModuleOp"> {
  let summary = "Appends the backward and the optimizer update to training functions";
  let description = [{
    On every function with a `tlora.optimizer` attribute ("adamw" or "sgd")
    whose first result is the loss: reverse-mode differentiation with
    respect to the `tlora.trainable` adapters only (activity analysis:
    values that depend on an adapter), through DifferentiableOpInterface.
    The seed is the hyper block's loss scale. Every adapter gradient is
    accumulated into its state (`tlora.accumulate_grad`), then one
    `tlora.optimizer_step` updates them all.

    With a `tlora.recompute` attribute on the function, each layer (ops
    marked `tlora.layer`) is recomputed right before its backward: the
    adjoint rules read clones of the layer's forward ops, so only the layer
    inputs stay live across the forward (activation checkpointing).
  }];
  let dependentDialects = ["::mlir::tlora::TloraDialect",
                           "::mlir::arith::ArithDialect"];
}

def PlanMemoryPass : Pass<"tlora-plan-memory", "ModuleOp"> {
  let summary = "Assigns every dispatch operand and result a memory slot";
  let description = [{
    Runs on entry functions made of `tlora.dispatch` ops. Intermediate
    tensors get offsets in one arena, sized for the function's
    `tlora.max_tokens` and reused once a value is dead (first fit, 64-byte
    aligned); parameters, KV caches, the token ids and the logits get slots
    in their own spaces. Sets `bindings` on each dispatch and
    `tlora.arena_size` on the function.
  }];
}

#endif // TLORA_PASSES_TD
