// Verifier errors of tlora ops.
// RUN: tlc-opt %s -split-input-file -verify-diagnostics

func.func @bad_linear(%x: tensor<?x16xf32>) {
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 8, inFeatures = 32>
  // expected-error @+1 {{input features 16 != weight in_features 32}}
  %y = tlora.ternary_linear %x, %w : tensor<?x16xf32>, !tlora.ternary<outFeatures = 8, inFeatures = 32> -> tensor<?x8xf32>
  return
}

// -----

func.func @bad_scale() {
  // expected-error @+1 {{scale must be positive and finite}}
  %w = tlora.ternary_weight "w" scale(-1.0) source(packed) : !tlora.ternary<outFeatures = 8, inFeatures = 32>
  return
}

// -----

func.func @bad_source() {
  // expected-error @+1 {{expected string or keyword containing one of the following enum values for attribute 'source' [packed, master]}}
  %w = tlora.ternary_weight "w" scale(1.0) source(fp8) : !tlora.ternary<outFeatures = 8, inFeatures = 32>
  return
}

// -----

// expected-error @+1 {{out_features must be a multiple of 4}}
func.func @bad_ternary_type(%w: !tlora.ternary<outFeatures = 6, inFeatures = 32>) {
  return
}

// -----

func.func @bad_norm(%x: tensor<?x16xf32>) {
  %w = tlora.weight "n" : tensor<8xf32>
  // expected-error @+1 {{weight must be [16]}}
  %y = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x16xf32>, tensor<8xf32> -> tensor<?x16xf32>
  return
}

// -----

func.func @bad_lora(%x: tensor<?x16xf32>) {
  %a = tlora.weight "a" : tensor<4x16xf32>
  %b = tlora.weight "b" : tensor<8x2xf32>
  // expected-error @+1 {{lora_B must be [8 x 4]}}
  %d = tlora.lora %x, %a, %b scaling(1.0) : tensor<?x16xf32>, tensor<4x16xf32>, tensor<8x2xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @bad_rope(%x: tensor<?x16xf32>, %p: index) {
  // expected-error @+1 {{head_dim 6 must be even and divide 16}}
  %y = tlora.rope %x at %p head_dim(6) theta(10000.0) : tensor<?x16xf32> -> tensor<?x16xf32>
  return
}

// -----

func.func @bad_gqa(%q: tensor<?x24xf32>, %p: index) {
  %kc = tlora.kv_cache "k" : !tlora.kv_cache<maxSeq = 8, kvHeads = 2, headDim = 8>
  // expected-error @+1 {{heads 3 must be a multiple of kv_heads 2}}
  %o = tlora.attention %q, %kc, %kc at %p scale(1.0) : tensor<?x24xf32>, !tlora.kv_cache<maxSeq = 8, kvHeads = 2, headDim = 8> -> tensor<?x24xf32>
  return
}

// -----

func.func @bad_append(%k: tensor<?x8xf32>, %p: index) {
  %kc = tlora.kv_cache "k" : !tlora.kv_cache<maxSeq = 8, kvHeads = 2, headDim = 8>
  // expected-error @+1 {{input width 8 != kv_heads*head_dim 16}}
  tlora.kv_append %k into %kc at %p : tensor<?x8xf32>, !tlora.kv_cache<maxSeq = 8, kvHeads = 2, headDim = 8>
  return
}

// -----

func.func @bad_rows(%x: tensor<4x16xf32>) {
  %w = tlora.weight "n" : tensor<16xf32>
  // expected-error @+1 {{token dimensions differ}}
  %y = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<4x16xf32>, tensor<16xf32> -> tensor<3x16xf32>
  return
}

// -----

func.func @bad_dense(%x: tensor<?x16xf32>, %r: index) {
  %w = tlora.weight "h" : tensor<32x8xbf16>
  // expected-error @+1 {{weight must be [32 x 16]}}
  %y = tlora.dense %x, %w rows(%r) : tensor<?x16xf32>, tensor<32x8xbf16> -> tensor<?x32xf32>
  return
}

// -----

// A microkernel call must match its C declaration: memrefs go as pointers,
// scalars with the declared type and count.
module {
  func.func private @tlc_k_scale(!llvm.ptr, index, f32)
  func.func @bad_scalar(%b: memref<64xi8>, %n: index) {
    // expected-error @+1 {{argument 2 of @tlc_k_scale is 'f32', the call passes 'index'}}
    tlora.microkernel_call @tlc_k_scale(%b, %n, %n) : memref<64xi8>, index, index
    return
  }
}

// -----

module {
  func.func private @tlc_k_scale(!llvm.ptr, index, f32)
  func.func @bad_count(%b: memref<64xi8>, %n: index) {
    // expected-error @+1 {{passes 2 arguments; @tlc_k_scale takes 3 and returns nothing}}
    tlora.microkernel_call @tlc_k_scale(%b, %n) : memref<64xi8>, index
    return
  }
}

// -----

module {
  func.func private @tlc_k_scale(!llvm.ptr, index, f32)
  func.func @scalar_for_pointer(%n: index, %f: f32) {
    // expected-error @+1 {{argument 0 of @tlc_k_scale is '!llvm.ptr', the call passes 'index'}}
    tlora.microkernel_call @tlc_k_scale(%n, %n, %f) : index, index, f32
    return
  }
}

// -----

func.func @undeclared(%n: index) {
  // expected-error @+1 {{calls @tlc_k_missing, which no declaration names}}
  tlora.microkernel_call @tlc_k_missing(%n) : index
  return
}

// -----

func.func @rows_outside() {
  %w = tlora.weight "embed" : tensor<100x8xf32>
  // expected-error @+1 {{rows [96, 104) outside the source's 100}}
  %r = tlora.weight_rows %w[96] : tensor<100x8xf32> -> tensor<8x8xf32>
  return
}

// -----

func.func @rows_width() {
  %w = tlora.weight "embed" : tensor<100x8xf32>
  // expected-error @+1 {{result must be rows of the [rows x cols] source}}
  %r = tlora.weight_rows %w[0] : tensor<100x8xf32> -> tensor<8x4xf32>
  return
}

// -----

func.func @rows_int8() {
  %w = tlora.weight "head" : tensor<100x8xi8>
  // expected-error @+1 {{row views are of bf16 or f32 parameters}}
  %r = tlora.weight_rows %w[0] : tensor<100x8xi8> -> tensor<8x8xi8>
  return
}
