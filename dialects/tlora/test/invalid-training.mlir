// Verifier errors of the training and adjoint ops, and of dispatches
// against their kernels.
// RUN: tlc-opt %s -split-input-file -verify-diagnostics

func.func @ce_labels(%x: tensor<8x16xf32>, %w: tensor<32x16xf32>, %l: tensor<4xi32>) {
  // expected-error @+1 {{labels must have 8 entries (one per token)}}
  %loss, %lse = tlora.cross_entropy %x, %w, %l : (tensor<8x16xf32>, tensor<32x16xf32>, tensor<4xi32>) -> (tensor<8xf32>, tensor<8xf32>)
  return
}

// -----

// Result types are inferred from the operands (InferTypeOpInterface): a
// per-token loss has the input's token count, dynamic here.
func.func @ce_result_rows(%x: tensor<?x16xf32>, %w: tensor<32x16xf32>, %l: tensor<?xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{inferred type(s) 'tensor<?xf32>', 'tensor<?xf32>' are incompatible with return type(s) of operation 'tensor<8xf32>', 'tensor<8xf32>'}}
  %loss, %lse = tlora.cross_entropy %x, %w, %l : (tensor<?x16xf32>, tensor<32x16xf32>, tensor<?xi32>) -> (tensor<8xf32>, tensor<8xf32>)
  return
}

// -----

func.func @ce_grad_weight(%x: tensor<8x16xf32>, %w: tensor<32x8xf32>, %l: tensor<8xi32>, %lse: tensor<8xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{weight must be [vocab x 16]}}
  %dx = tlora.cross_entropy_grad %x, %w, %l, %lse, %g : (tensor<8x16xf32>, tensor<32x8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @rms_grad(%x: tensor<?x16xf32>, %w: tensor<8xbf16>, %g: tensor<?x16xf32>) {
  // expected-error @+1 {{weight must be [16]}}
  %dx = tlora.rms_norm_grad %x, %w, %g eps(1.0e-05) : (tensor<?x16xf32>, tensor<8xbf16>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

func.func @lora_grad(%x: tensor<?x16xf32>, %a: tensor<4x16xf32>, %b: tensor<32x8xf32>, %g: tensor<?x32xf32>) {
  // expected-error @+1 {{lora_B must be [32 x 4]}}
  %dx, %da, %db = tlora.lora_grad %x, %a, %b, %g scaling(2.0) : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<32x8xf32>, tensor<?x32xf32>) -> (tensor<?x16xf32>, tensor<4x16xf32>, tensor<32x8xf32>)
  return
}

// -----

func.func @relu_grad(%g: tensor<?x16xf32>, %u: tensor<?x8xf32>, %d: tensor<?x16xf32>) {
  // expected-error @+1 {{up must have gate's type}}
  %dg, %du = tlora.squared_relu_mul_grad %g, %u, %d : (tensor<?x16xf32>, tensor<?x8xf32>, tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x8xf32>)
  return
}

// -----

func.func @attn_grad(%q: tensor<?x32xf32>, %k: tensor<?x16xf32>, %v: tensor<?x16xf32>, %o: tensor<?x32xf32>, %lse: tensor<?x3xf32>, %g: tensor<?x32xf32>) {
  // expected-error @+1 {{needs query [T x H*8], key/value [T x KVH*8] with KVH dividing H, lse [T x H]}}
  %dq, %dk, %dv = tlora.causal_attention_grad %q, %k, %v, %o, %lse, %g head_dim(8) seq_len(4) scale(0.35) : (tensor<?x32xf32>, tensor<?x16xf32>, tensor<?x16xf32>, tensor<?x32xf32>, tensor<?x3xf32>, tensor<?x32xf32>) -> (tensor<?x32xf32>, tensor<?x16xf32>, tensor<?x16xf32>)
  return
}

// -----

func.func @mean_loss(%loss: tensor<8xf32>, %l: tensor<6xi32>) {
  // expected-error @+1 {{labels must have 8 entries (one per token)}}
  %m = tlora.mean_loss %loss, %l : (tensor<8xf32>, tensor<6xi32>) -> tensor<1xf32>
  return
}

// -----

module {
  module @kernels {
    func.func @k(%a: memref<4xf32>, %t: index, %p: index, %r: index, %b: index, %e: index) {
      return
    }
  }
  func.func @wrong_buffers(%x: tensor<4xf32>) {
    // expected-error @+1 {{kernel @kernels::@k takes 1 buffers, the dispatch passes 2}}
    %y = tlora.dispatch @kernels::@k(%x) workload(1 * T + 0) : (tensor<4xf32>) -> tensor<4xf32>
    return
  }
}

// -----

module {
  module @kernels {
  }
  func.func @missing_kernel(%x: tensor<4xf32>) {
    // expected-error @+1 {{names kernel @kernels::@nope, which the kernels module lacks}}
    tlora.dispatch @kernels::@nope(%x) workload(1 * T + 0) : (tensor<4xf32>) -> ()
    return
  }
}

// -----

func.func @bad_optimizer(%h: tensor<16xf32>) {
  // expected-error @+2 {{expected ::mlir::tlora::Optimizer to be one of: adamw, sgd}}
  // expected-error @+1 {{failed to parse Tlora_OptimizerAttr parameter 'value'}}
  tlora.optimizer_step <adam>, %h : tensor<16xf32>
  return
}

// -----

// expected-error @+2 {{expected ::mlir::tlora::Space to be one of: arena, param, kv, input, output, state, hyper, labels}}
// expected-error @+1 {{failed to parse Tlora_SlotAttr parameter 'space'}}
func.func @bad_space() attributes {b = #tlora.slot<space = heap, offset = 0, size = 4>} {
  return
}
