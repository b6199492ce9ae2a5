// Operations of the tlora dialect. Semantics follow transformers'
// BitNetForCausalLM and PEFT's LoRA exactly (docs/architecture.md).
#ifndef TLORA_OPS_TD
#define TLORA_OPS_TD

include "dialects/tlora/IR/TloraTypes.td"
include "dialects/tlora/IR/TloraInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"

def Tlora_Activation : RankedTensorOf<[F32]>;
def Tlora_FloatWeight : RankedTensorOf<[BF16, F16, F32]>;
// A float matrix or its int8 form (per-row scales ride with the parameter).
def Tlora_HeadWeight : RankedTensorOf<[BF16, F16, F32, I8, I<6>]>;
def Tlora_Ids : 1DTensorOf<[I32]>;
def Tlora_PerToken : 1DTensorOf<[F32]>;
def Tlora_Scalar : 1DTensorOf<[F32]>;
def Tlora_Differentiable : DeclareOpInterfaceMethods<Tlora_DifferentiableOpInterface>;

//===----------------------------------------------------------------------===//
// Parameters and state
//===----------------------------------------------------------------------===//

def Tlora_WeightOp : Tlora_Op<"weight", [Pure]> {
  let summary = "a parameter of the model, by name";
  let description = [{
    Float parameters keep bf16 or widen to f32. An i8 result is the
    parameter quantized per row to int8 (symmetric, scale max|row| / 127),
    an i6 result to 6 bits (scale max|row| / 31): the lossy LM head options.
  }];
  let arguments = (ins StrAttr:$name);
  let results = (outs Tlora_HeadWeight:$result);
  let assemblyFormat = "$name attr-dict `:` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_WeightRowsOp : Tlora_Op<"weight_rows", [Pure]> {
  let summary = "rows [first, first + count) of a float parameter, in place";
  let description = [{
    A view of a contiguous row range of a `tlora.weight` (bf16 or f32): a
    binding of part of the stored parameter. GPU targets split a parameter
    larger than one storage buffer binding may cover (Vulkan guarantees
    128 MiB) into such chunks.
  }];
  let arguments = (ins Tlora_HeadWeight:$source, I64Attr:$first);
  let results = (outs Tlora_HeadWeight:$result);
  let assemblyFormat = "$source `[` $first `]` attr-dict `:` qualified(type($source)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_TernaryWeightOp : Tlora_Op<"ternary_weight", [Pure]> {
  let summary = "a frozen ternary parameter with its scale gamma, by name";
  let description = [{
    `scale` is gamma: y = (x_q . W_t^T) * gamma / s. `source` records how the
    checkpoint stores it: packed (HF 2-bit codes) or master (float weights
    ternarized at compile time as clamp(round(W / gamma), -1, 1)).
  }];
  let arguments = (ins StrAttr:$name, F32Attr:$scale, Tlora_WeightSource:$source);
  let results = (outs Tlora_TernaryType:$result);
  let assemblyFormat = "$name `scale` `(` $scale `)` `source` `(` $source `)` attr-dict `:` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_KVCacheOp : Tlora_Op<"kv_cache", [Pure]> {
  let summary = "the session's key or value cache of one layer, by name";
  let arguments = (ins StrAttr:$name);
  let results = (outs Tlora_KVCacheType:$result);
  let assemblyFormat = "$name attr-dict `:` qualified(type($result))";
}

//===----------------------------------------------------------------------===//
// Compute
//===----------------------------------------------------------------------===//

def Tlora_EmbedOp : Tlora_Op<"embed", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "rows of an embedding table, as f32";
  let arguments = (ins Tlora_FloatWeight:$table, Tlora_Ids:$ids);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$table `[` $ids `]` attr-dict `:` qualified(type($table)) `,` qualified(type($ids)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_RMSNormOp : Tlora_Op<"rms_norm", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "w * x / sqrt(mean(x^2) + eps) over the last dimension";
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$weight, F32Attr:$epsilon);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight `eps` `(` $epsilon `)` attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_TernaryLinearOp : Tlora_Op<"ternary_linear", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "BitLinear: per-token int8 quantization of x, then x_q . W_t^T * gamma / s";
  let arguments = (ins Tlora_Activation:$input, Tlora_TernaryType:$weight);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_QuantizeOp : Tlora_Op<"quantize", [InferTypeOpAdaptor, Pure]> {
  let summary = "per-token absmax int8 quantization: s = 127 / max(max|x|, 1e-5)";
  let arguments = (ins Tlora_Activation:$input);
  let results = (outs Tlora_QuantizedActType:$result);
  let assemblyFormat = "$input attr-dict `:` qualified(type($input)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_TernaryMatmulOp : Tlora_Op<"ternary_matmul", [InferTypeOpAdaptorWithIsCompatible, Pure]> {
  let summary = "exact int32 product of int8 activations and ternary weights, scaled by gamma / s";
  let arguments = (ins Tlora_QuantizedActType:$input, Tlora_TernaryType:$weight);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_LoraOp : Tlora_Op<"lora", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "a LoRA adapter's contribution: scaling * (x . A^T) . B^T";
  let description = [{
    As PEFT defines it, on the unquantized input x. A is [r x in], B is
    [out x r], scaling = lora_alpha / r. Added to the base layer's output.
  }];
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$loraA,
                   Tlora_FloatWeight:$loraB, F32Attr:$scaling);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $loraA `,` $loraB `scaling` `(` $scaling `)` attr-dict `:` qualified(type($input)) `,` qualified(type($loraA)) `,` qualified(type($loraB)) `->` qualified(type($result))";
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def Tlora_DenseOp : Tlora_Op<"dense", [InferTypeOpAdaptor, Pure]> {
  let summary = "x . W^T with a float weight (the LM head), for the last `rows` tokens";
  let arguments = (ins Tlora_Activation:$input, Tlora_HeadWeight:$weight, Index:$rows);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight `rows` `(` $rows `)` attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_RopeOp : Tlora_Op<"rope", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "rotate-half rotary embedding of each head, positions pos .. pos+T-1";
  let description = [{
    With `period` = S, positions restart every S tokens (a batch of
    sequences of S tokens: token t sits at pos + t mod S). `inverse` rotates
    by minus the angle (the adjoint: rotations are orthogonal).
  }];
  let arguments = (ins Tlora_Activation:$input, Index:$position,
                   I64Attr:$headDim, F64Attr:$theta,
                   OptionalAttr<I64Attr>:$period, UnitAttr:$inverse);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `at` $position `head_dim` `(` $headDim `)` `theta` `(` $theta `)` attr-dict `:` qualified(type($input)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_KVAppendOp : Tlora_Op<"kv_append", [MemoryEffects<[MemWrite]>]> {
  let summary = "stores T rows of keys or values at positions pos .. pos+T-1 of a cache";
  let arguments = (ins Tlora_KVCacheType:$cache, Tlora_Activation:$input, Index:$position);
  let assemblyFormat = "$input `into` $cache `at` $position attr-dict `:` qualified(type($input)) `,` qualified(type($cache))";
  let hasVerifier = 1;
}

def Tlora_AttentionOp : Tlora_Op<"attention", [InferTypeOpAdaptor, MemoryEffects<[MemRead]>,
    AllTypesMatch<["keys", "values"]>]> {
  let summary = "causal softmax attention of T queries over cache positions 0 .. pos+t";
  let description = [{
    Queries are [T x heads*head_dim]; query head h reads kv head
    h / (heads / kv_heads) (grouped-query attention). Scores are scaled by
    `scale` (1/sqrt(head_dim)).
  }];
  let arguments = (ins Tlora_Activation:$query, Tlora_KVCacheType:$keys,
                   Tlora_KVCacheType:$values, Index:$position, F32Attr:$scale);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$query `,` $keys `,` $values `at` $position `scale` `(` $scale `)` attr-dict `:` qualified(type($query)) `,` qualified(type($keys)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_SquaredReluMulOp : Tlora_Op<"squared_relu_mul", [DeclareOpInterfaceMethods<InferTypeOpInterface>, Pure, Tlora_Differentiable,
    AllTypesMatch<["gate", "up", "result"]>]> {
  let summary = "relu(gate)^2 * up, the relu2 gated MLP";
  let arguments = (ins Tlora_Activation:$gate, Tlora_Activation:$up);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` qualified(type($result))";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Training: adapters as state, fused losses, adjoint ops and optimizers
//===----------------------------------------------------------------------===//

def Tlora_TrainableOp : Tlora_Op<"trainable", [Pure]> {
  let summary = "a trainable adapter tensor (training state), by PEFT key";
  let description = [{
    Float32 state owned by the training session. With `gradient`, the value
    is the tensor's gradient accumulator instead (used after lowering).
  }];
  let arguments = (ins StrAttr:$name, UnitAttr:$gradient);
  let results = (outs RankedTensorOf<[F32]>:$result);
  let assemblyFormat = "$name attr-dict `:` qualified(type($result))";
}

def Tlora_HyperOp : Tlora_Op<"hyper", [Pure]> {
  let summary = "the step's hyper-parameter block (tlc_train_hyper_t, 64 bytes)";
  let results = (outs StaticShapeTensorOf<[F32]>:$result);
  let assemblyFormat = "attr-dict `:` qualified(type($result))";
}

def Tlora_TrainStateOp : Tlora_Op<"train_state", [Pure]> {
  let summary = "the training state (parameters, gradients, moments) or a range of it";
  let description = [{
    The words [first, first + size) of the training state; the whole state
    by default. GPU targets bind ranges to keep bindings within the
    device's storage buffer range.
  }];
  let arguments = (ins DefaultValuedAttr<I64Attr, "0">:$first);
  let results = (outs StaticShapeTensorOf<[F32]>:$result);
  let assemblyFormat = "attr-dict `:` qualified(type($result))";
}

def Tlora_LossScaleOp : Tlora_Op<"loss_scale", [InferTypeOpAdaptor, Pure]> {
  let summary = "the seed of the backward: d(step loss) / d(loss), from the hyper block";
  let arguments = (ins StaticShapeTensorOf<[F32]>:$hyper);
  let results = (outs Tlora_Scalar:$result);
  let assemblyFormat = "$hyper attr-dict `:` qualified(type($hyper)) `->` qualified(type($result))";
}

def Tlora_CausalAttentionOp : Tlora_Op<"causal_attention", [InferTypeOpAdaptor, Pure,
    Tlora_Differentiable, AllTypesMatch<["key", "value"]>]> {
  let summary = "causal softmax attention within each sequence of a packed batch";
  let description = [{
    Queries [T x heads*head_dim], keys and values [T x kv_heads*head_dim];
    T tokens are sequences of `seq_len` tokens back to back. `lse`
    [T x heads] (log-sum-exp of the scaled scores) is kept for the backward.
  }];
  let arguments = (ins Tlora_Activation:$query, Tlora_Activation:$key,
                   Tlora_Activation:$value, I64Attr:$headDim, I64Attr:$seqLen,
                   F32Attr:$scale);
  let results = (outs Tlora_Activation:$result, Tlora_Activation:$lse);
  let assemblyFormat = "$query `,` $key `,` $value `head_dim` `(` $headDim `)` `seq_len` `(` $seqLen `)` `scale` `(` $scale `)` attr-dict `:` qualified(type($query)) `,` qualified(type($key)) `->` qualified(type($result)) `,` qualified(type($lse))";
  let hasVerifier = 1;
}

def Tlora_CausalAttentionGradOp : Tlora_Op<"causal_attention_grad", [InferTypeOpAdaptor, Pure]> {
  let summary = "adjoints of causal_attention's query, key and value";
  let arguments = (ins Tlora_Activation:$query, Tlora_Activation:$key,
                   Tlora_Activation:$value, Tlora_Activation:$output,
                   Tlora_Activation:$lse, Tlora_Activation:$outputGrad,
                   I64Attr:$headDim, I64Attr:$seqLen, F32Attr:$scale);
  let results = (outs Tlora_Activation:$queryGrad, Tlora_Activation:$keyGrad,
                 Tlora_Activation:$valueGrad);
  let assemblyFormat = "operands `head_dim` `(` $headDim `)` `seq_len` `(` $seqLen `)` `scale` `(` $scale `)` attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_RMSNormGradOp : Tlora_Op<"rms_norm_grad", [InferTypeOpAdaptor, Pure]> {
  let summary = "adjoint of rms_norm's input";
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$weight,
                   Tlora_Activation:$resultGrad, F32Attr:$epsilon);
  let results = (outs Tlora_Activation:$inputGrad);
  let assemblyFormat = "$input `,` $weight `,` $resultGrad `eps` `(` $epsilon `)` attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_TernaryMatmulTransposedOp : Tlora_Op<"ternary_matmul_transposed", [InferTypeOpAdaptor, Pure]> {
  let summary = "dX = dY . W_t * gamma, on the packed ternary weights";
  let description = [{
    The backward product of a frozen ternary layer (straight-through
    estimator for the activation quantization).
  }];
  let arguments = (ins Tlora_Activation:$input, Tlora_TernaryType:$weight);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_LoraGradOp : Tlora_Op<"lora_grad", [InferTypeOpAdaptor, Pure]> {
  let summary = "adjoints of a LoRA branch: input, lora_A and lora_B";
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$loraA,
                   Tlora_FloatWeight:$loraB, Tlora_Activation:$resultGrad,
                   F32Attr:$scaling);
  let results = (outs Tlora_Activation:$inputGrad,
                 RankedTensorOf<[F32]>:$loraAGrad,
                 RankedTensorOf<[F32]>:$loraBGrad);
  let assemblyFormat = "operands `scaling` `(` $scaling `)` attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_SquaredReluMulGradOp : Tlora_Op<"squared_relu_mul_grad", [InferTypeOpAdaptor, Pure]> {
  let summary = "adjoints of squared_relu_mul's gate and up";
  let arguments = (ins Tlora_Activation:$gate, Tlora_Activation:$up,
                   Tlora_Activation:$resultGrad);
  let results = (outs Tlora_Activation:$gateGrad, Tlora_Activation:$upGrad);
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_CrossEntropyOp : Tlora_Op<"cross_entropy", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "next-token cross entropy fused with the LM head, per token";
  let description = [{
    loss[t] = logsumexp(x[t] . W^T) - (x[t] . W^T)[labels[t]], 0 where
    labels[t] < 0 (ignored). The [T x vocab] logits never exist in memory;
    `lse` [T] is kept for the backward.
  }];
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$weight,
                   Tlora_Ids:$labels);
  let results = (outs Tlora_PerToken:$loss, Tlora_PerToken:$lse);
  let assemblyFormat = "$input `,` $weight `,` $labels attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_CrossEntropyGradOp : Tlora_Op<"cross_entropy_grad", [InferTypeOpAdaptor, Pure]> {
  let summary = "adjoint of cross_entropy's input, fused with the LM head";
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$weight,
                   Tlora_Ids:$labels, Tlora_PerToken:$lse,
                   Tlora_PerToken:$lossGrad);
  let results = (outs Tlora_Activation:$inputGrad);
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_MeanLossOp : Tlora_Op<"mean_loss", [InferTypeOpAdaptor, Pure, Tlora_Differentiable]> {
  let summary = "mean of the per-token losses over the tokens with a label";
  let arguments = (ins Tlora_PerToken:$loss, Tlora_Ids:$labels);
  let results = (outs Tlora_Scalar:$result);
  let assemblyFormat = "$loss `,` $labels attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_MeanLossGradOp : Tlora_Op<"mean_loss_grad", [InferTypeOpAdaptor, Pure]> {
  let summary = "adjoint of mean_loss: seed / count where labelled, else 0";
  let arguments = (ins Tlora_Scalar:$resultGrad, Tlora_Ids:$labels);
  let results = (outs Tlora_PerToken:$lossGrad);
  let assemblyFormat = "$resultGrad `,` $labels attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Tlora_AccumulateGradOp : Tlora_Op<"accumulate_grad", [MemoryEffects<[MemWrite]>]> {
  let summary = "adds a gradient into the named adapter's accumulator";
  let arguments = (ins RankedTensorOf<[F32]>:$grad, StrAttr:$name);
  let assemblyFormat = "$grad `into` $name attr-dict `:` qualified(type($grad))";
  let hasVerifier = 1;
}

def Tlora_OptimizerStepOp : Tlora_Op<"optimizer_step", [MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "one optimizer update of every adapter from its accumulated gradient";
  let description = [{
    `kind` is adamw (bias correction, decoupled weight decay) or sgd.
    Hyper-parameters come from the hyper block; the update is skipped while
    gradients accumulate (apply = 0). Clips by the global gradient norm
    when max_grad_norm > 0. Zeroes the accumulators.
  }];
  let arguments = (ins StaticShapeTensorOf<[F32]>:$hyper,
                   Tlora_OptimizerAttr:$kind);
  let assemblyFormat = "$kind `,` $hyper attr-dict `:` qualified(type($hyper))";
}

//===----------------------------------------------------------------------===//
// Lowered form: dispatches of compiled kernels
//===----------------------------------------------------------------------===//

def Tlora_DispatchOp : Tlora_Op<"dispatch", [MemoryEffects<[MemRead, MemWrite]>,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "runs a compiled kernel over a workload split across threads";
  let description = [{
    `kernel` names a function of the `kernels` module. The runtime splits
    the workload `tokens_factor * T + constant` into ranges across its
    threads. `bindings`, set by memory planning, say where each operand and
    result lives (one #tlora.slot each, operands first).
  }];
  let arguments = (ins SymbolRefAttr:$kernel, Variadic<AnyType>:$operands,
                   I64Attr:$tokensFactor, I64Attr:$constant,
                   OptionalAttr<ArrayAttr>:$bindings);
  let results = (outs Variadic<AnyType>:$results);
  let assemblyFormat = "$kernel `(` $operands `)` `workload` `(` $tokensFactor `*` `T` `+` $constant `)` attr-dict `:` functional-type($operands, $results)";
}

def Tlora_MicrokernelCallOp : Tlora_Op<"microkernel_call",
    [DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "calls a C microkernel, buffers passed as pointers";
  let description = [{
    Kernel-level op of targets that link C microkernels (llvm-cpu). `callee`
    names a `func.func private` declaration of the kernels module, derived
    from the microkernel's compiled definition. Each memref operand is passed
    as its aligned base pointer (the callee takes `!llvm.ptr` there); every
    other operand must have the callee's parameter type. So a call that
    disagrees with the C prototype fails to verify instead of miscompiling.
  }];
  let arguments = (ins FlatSymbolRefAttr:$callee,
                   Variadic<AnyTypeOf<[AnyStaticShapeMemRef, Index, I32, F32]>>:$operands);
  let assemblyFormat = "$callee `(` $operands `)` attr-dict `:` type($operands)";
}

#endif // TLORA_OPS_TD
