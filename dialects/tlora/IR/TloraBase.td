// The tlora dialect: ternary linear layers, LoRA adapters and the few
// decoder-specific ops (RoPE, attention over a KV cache, sub-norms) that a
// BitNet b1.58 model needs beyond upstream dialects.
#ifndef TLORA_BASE_TD
#define TLORA_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def Tlora_Dialect : Dialect {
  let name = "tlora";
  let cppNamespace = "::mlir::tlora";
  let summary = "Ternary linear layers, LoRA adapters and BitNet decoder ops";
  let description = [{
    Weights are referred to by name (`tlora.weight`, `tlora.ternary_weight`);
    their bytes never enter the IR. Activations are `tensor<?xDxf32>` whose
    dynamic leading dimension is the number of tokens of the current call.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
}

class Tlora_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<Tlora_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

class Tlora_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Tlora_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

class Tlora_Op<string mnemonic, list<Trait> traits = []>
    : Op<Tlora_Dialect, mnemonic, traits>;

#endif // TLORA_BASE_TD
