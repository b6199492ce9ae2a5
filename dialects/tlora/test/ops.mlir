// Round trip of every tlora op: print, parse, print again.
// RUN: tlc-opt %s | tlc-opt | FileCheck %s

// CHECK-LABEL: func.func @layer
func.func @layer(%ids: tensor<?xi32>, %pos: index, %rows: index) -> tensor<?x32xf32> {
  // CHECK: tlora.weight "embed" : tensor<32x16xbf16>
  %table = tlora.weight "embed" : tensor<32x16xbf16>
  // CHECK: tlora.embed %{{.*}}[%{{.*}}] : tensor<32x16xbf16>, tensor<?xi32> -> tensor<?x16xf32>
  %x = tlora.embed %table[%ids] : tensor<32x16xbf16>, tensor<?xi32> -> tensor<?x16xf32>
  %nw = tlora.weight "norm" : tensor<16xf32>
  // CHECK: tlora.rms_norm %{{.*}}, %{{.*}} eps(9.99999997E-7)
  %h = tlora.rms_norm %x, %nw eps(1.0e-6) : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x16xf32>
  // CHECK: tlora.ternary_weight "q" scale(5.000000e-01) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 16>
  %w = tlora.ternary_weight "q" scale(0.5) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 16>
  // CHECK: tlora.ternary_linear
  %q = tlora.ternary_linear %h, %w : tensor<?x16xf32>, !tlora.ternary<outFeatures = 16, inFeatures = 16> -> tensor<?x16xf32>
  // CHECK: tlora.quantize %{{.*}} : tensor<?x16xf32> -> !tlora.qact<features = 16>
  %hq = tlora.quantize %h : tensor<?x16xf32> -> !tlora.qact<features = 16>
  // CHECK: tlora.ternary_matmul
  %k = tlora.ternary_matmul %hq, %w : !tlora.qact<features = 16>, !tlora.ternary<outFeatures = 16, inFeatures = 16> -> tensor<?x16xf32>
  %a = tlora.weight "lora_A" : tensor<4x16xf32>
  %b = tlora.weight "lora_B" : tensor<16x4xf32>
  // CHECK: tlora.lora %{{.*}}, %{{.*}}, %{{.*}} scaling(2.000000e+00)
  %d = tlora.lora %h, %a, %b scaling(2.0) : tensor<?x16xf32>, tensor<4x16xf32>, tensor<16x4xf32> -> tensor<?x16xf32>
  // CHECK: tlora.rope %{{.*}} at %{{.*}} head_dim(8) theta(1.000000e+04)
  %qr = tlora.rope %q at %pos head_dim(8) theta(10000.0) : tensor<?x16xf32> -> tensor<?x16xf32>
  // CHECK: tlora.kv_cache "k0" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 8>
  %kc = tlora.kv_cache "k0" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 8>
  %vc = tlora.kv_cache "v0" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 8>
  // CHECK: tlora.kv_append %{{.*}} into %{{.*}} at %{{.*}}
  tlora.kv_append %k into %kc at %pos : tensor<?x16xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 8>
  // CHECK: tlora.attention %{{.*}}, %{{.*}}, %{{.*}} at %{{.*}} scale(
  %o = tlora.attention %qr, %kc, %vc at %pos scale(0.35355339) : tensor<?x16xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 8> -> tensor<?x16xf32>
  // CHECK: tlora.squared_relu_mul
  %m = tlora.squared_relu_mul %o, %d : tensor<?x16xf32>
  %head = tlora.weight "head" : tensor<32x16xbf16>
  // CHECK: tlora.dense %{{.*}}, %{{.*}} rows(%{{.*}})
  %logits = tlora.dense %m, %head rows(%rows) : tensor<?x16xf32>, tensor<32x16xbf16> -> tensor<?x32xf32>
  return %logits : tensor<?x32xf32>
}

// CHECK-LABEL: func.func @lowered
func.func @lowered(%x: tensor<?x16xf32>) -> tensor<?x16xf32> {
  // CHECK: tlora.dispatch @kernels::@k(%{{.*}}) workload(1 * T + 0) {bindings = [#tlora.slot<space = input, offset = 0, size = 64>, #tlora.slot<space = output, offset = 0, size = 64>]}
  %y = tlora.dispatch @kernels::@k(%x) workload(1 * T + 0) {bindings = [#tlora.slot<space = input, offset = 0, size = 64>, #tlora.slot<space = output, offset = 0, size = 64>]} : (tensor<?x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
