// Operations of the tlora dialect. Semantics follow transformers'
// BitNetForCausalLM and PEFT's LoRA exactly (docs/architecture.md).
#ifndef TLORA_OPS_TD
#define TLORA_OPS_TD

include "dialects/tlora/IR/TloraTypes.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"

def Tlora_Activation : RankedTensorOf<[F32]>;
def Tlora_FloatWeight : RankedTensorOf<[BF16, F16, F32]>;
// A float matrix or its int8 form (per-row scales ride with the parameter).
def Tlora_HeadWeight : RankedTensorOf<[BF16, F16, F32, I8, I<6>]>;
def Tlora_Ids : 1DTensorOf<[I32]>;

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

def Tlora_TernaryWeightOp : Tlora_Op<"ternary_weight", [Pure]> {
  let summary = "a frozen ternary parameter with its scale gamma, by name";
  let description = [{
    `scale` is gamma: y = (x_q . W_t^T) * gamma / s. `source` records how the
    checkpoint stores it: "packed" (HF 2-bit codes) or "master" (float
    weights ternarized at compile time as clamp(round(W / gamma), -1, 1)).
  }];
  let arguments = (ins StrAttr:$name, F32Attr:$scale, StrAttr:$source);
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

def Tlora_EmbedOp : Tlora_Op<"embed", [Pure]> {
  let summary = "rows of an embedding table, as f32";
  let arguments = (ins Tlora_FloatWeight:$table, Tlora_Ids:$ids);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$table `[` $ids `]` attr-dict `:` qualified(type($table)) `,` qualified(type($ids)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_RMSNormOp : Tlora_Op<"rms_norm", [Pure]> {
  let summary = "w * x / sqrt(mean(x^2) + eps) over the last dimension";
  let arguments = (ins Tlora_Activation:$input, Tlora_FloatWeight:$weight, F32Attr:$epsilon);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight `eps` `(` $epsilon `)` attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_TernaryLinearOp : Tlora_Op<"ternary_linear", [Pure]> {
  let summary = "BitLinear: per-token int8 quantization of x, then x_q . W_t^T * gamma / s";
  let arguments = (ins Tlora_Activation:$input, Tlora_TernaryType:$weight);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_QuantizeOp : Tlora_Op<"quantize", [Pure]> {
  let summary = "per-token absmax int8 quantization: s = 127 / max(max|x|, 1e-5)";
  let arguments = (ins Tlora_Activation:$input);
  let results = (outs Tlora_QuantizedActType:$result);
  let assemblyFormat = "$input attr-dict `:` qualified(type($input)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_TernaryMatmulOp : Tlora_Op<"ternary_matmul", [Pure]> {
  let summary = "exact int32 product of int8 activations and ternary weights, scaled by gamma / s";
  let arguments = (ins Tlora_QuantizedActType:$input, Tlora_TernaryType:$weight);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_LoraOp : Tlora_Op<"lora", [Pure]> {
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

def Tlora_DenseOp : Tlora_Op<"dense", [Pure]> {
  let summary = "x . W^T with a float weight (the LM head), for the last `rows` tokens";
  let arguments = (ins Tlora_Activation:$input, Tlora_HeadWeight:$weight, Index:$rows);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$input `,` $weight `rows` `(` $rows `)` attr-dict `:` qualified(type($input)) `,` qualified(type($weight)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def Tlora_RopeOp : Tlora_Op<"rope", [Pure]> {
  let summary = "rotate-half rotary embedding of each head, positions pos .. pos+T-1";
  let arguments = (ins Tlora_Activation:$input, Index:$position,
                   I64Attr:$headDim, F64Attr:$theta);
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

def Tlora_AttentionOp : Tlora_Op<"attention", [MemoryEffects<[MemRead]>,
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

def Tlora_SquaredReluMulOp : Tlora_Op<"squared_relu_mul", [Pure,
    AllTypesMatch<["gate", "up", "result"]>]> {
  let summary = "relu(gate)^2 * up, the relu2 gated MLP";
  let arguments = (ins Tlora_Activation:$gate, Tlora_Activation:$up);
  let results = (outs Tlora_Activation:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` qualified(type($result))";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Lowered form: dispatches of compiled kernels
//===----------------------------------------------------------------------===//

def Tlora_DispatchOp : Tlora_Op<"dispatch", [MemoryEffects<[MemRead, MemWrite]>]> {
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

#endif // TLORA_OPS_TD
