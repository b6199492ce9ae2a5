// Types and attributes of the tlora dialect.
#ifndef TLORA_TYPES_TD
#define TLORA_TYPES_TD

include "dialects/tlora/IR/TloraBase.td"
include "mlir/IR/EnumAttr.td"

def Tlora_Space : I32EnumAttr<"Space", "where a dispatch buffer lives", [
    I32EnumAttrCase<"Arena", 0, "arena">,   // scratch, offset planned here
    I32EnumAttrCase<"Param", 1, "param">,   // a module parameter (`name` set)
    I32EnumAttrCase<"KV", 2, "kv">,         // the session's KV cache
    I32EnumAttrCase<"Input", 3, "input">,   // the call's token ids
    I32EnumAttrCase<"Output", 4, "output">, // the call's logits or loss
    I32EnumAttrCase<"State", 5, "state">,   // the training state
    I32EnumAttrCase<"Hyper", 6, "hyper">,   // the step's hyper-parameter block
    I32EnumAttrCase<"Labels", 7, "labels">  // train_step's labels
  ]> {
  let cppNamespace = "::mlir::tlora";
  let genSpecializedAttr = 0;
}

def Tlora_TernaryType : Tlora_Type<"Ternary", "ternary"> {
  let summary = "a frozen ternary weight matrix W_t in {-1,0,+1}^(out x in)";
  let description = [{
    Packed 2-bit codes in the layout of the target's kernel; the per-tensor
    scale gamma travels with the `tlora.ternary_weight` op that names it.
  }];
  let parameters = (ins "int64_t":$outFeatures, "int64_t":$inFeatures);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Tlora_QuantizedActType : Tlora_Type<"QuantizedAct", "qact"> {
  let summary = "per-token int8 activations with their scales, [tokens x features]";
  let description = [{
    Rows are tokens (dynamic). Each row holds x_q = clamp(round(x * s), -128, 127)
    with s = 127 / max(max|x|, 1e-5), plus 1/s and the row sum of x_q.
  }];
  let parameters = (ins "int64_t":$features);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Tlora_KVCacheType : Tlora_Type<"KVCache", "kv_cache"> {
  let summary = "one layer's key or value cache, [max_seq x kv_heads x head_dim] f32";
  let parameters = (ins "int64_t":$maxSeq, "int64_t":$kvHeads, "int64_t":$headDim);
  let assemblyFormat = "`<` struct(params) `>`";
}

def Tlora_Optimizer : I32EnumAttr<"Optimizer", "the update of a training step", [
    I32EnumAttrCase<"AdamW", 0, "adamw">, // bias correction, decoupled decay
    I32EnumAttrCase<"SGD", 1, "sgd">
  ]> {
  let cppNamespace = "::mlir::tlora";
  let genSpecializedAttr = 0;
}
def Tlora_OptimizerAttr : EnumAttr<Tlora_Dialect, Tlora_Optimizer, "optimizer"> {
  let assemblyFormat = "`<` $value `>`";
}

def Tlora_WeightSource : I32EnumAttr<"WeightSource",
    "how a checkpoint stores a ternary weight", [
    I32EnumAttrCase<"Packed", 0, "packed">, // HF 2-bit codes
    I32EnumAttrCase<"Master", 1, "master">  // floats, ternarized at compile time
  ]> {
  let cppNamespace = "::mlir::tlora";
}

def Tlora_SlotAttr : Tlora_Attr<"Slot", "slot"> {
  let summary = "where a dispatch operand lives: a memory space, an offset and a size";
  let description = [{
    Spaces (the `Space` enum, mirrored by the module schema's Space): arena
    (the session's scratch, offset planned by the compiler), param (a module
    parameter, `name` set), kv (the session's KV cache), input and output
    (the call's buffers), state, hyper and labels (training).
  }];
  let parameters = (ins EnumParameter<Tlora_Space>:$space, "int64_t":$offset,
                    "int64_t":$size, OptionalParameter<"StringAttr">:$name);
  let assemblyFormat = "`<` struct(params) `>`";
}

#endif // TLORA_TYPES_TD
