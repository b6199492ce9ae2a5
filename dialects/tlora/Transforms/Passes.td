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
