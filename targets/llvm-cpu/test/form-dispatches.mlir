// RUN: tlc-opt %s -split-input-file -tlc-llvmcpu-form-dispatches | FileCheck %s

// Each compute op becomes a dispatch; two layers of one shape share kernels,
// and the kernels module holds one instance per shape and token capacity.
// CHECK-LABEL: func.func @prefill
// CHECK: tlora.dispatch @kernels::@rms_norm_d32_f32_eps{{[0-9A-F]+}}_t8(%{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: tlora.dispatch @kernels::@quantize_k32_t8(%{{.*}}) workload(1 * T + 0)
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n64_k32_t8(%{{.*}}, %{{.*}}) workload(0 * T + 1)
// CHECK: tlora.dispatch @kernels::@quantize_k32_t8
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n64_k32_t8
// CHECK: tlora.dispatch @kernels::@add_d64_t8(%{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: module @kernels
// CHECK-COUNT-1: func.func @ternary_matmul_n64_k32_t8
// CHECK-NOT: func.func @ternary_matmul_n64_k32_t8
func.func @prefill(%x: tensor<?x32xf32>) -> tensor<?x64xf32> attributes {tlora.max_tokens = 8 : i64} {
  %nw = tlora.weight "n" : tensor<32xf32>
  %h = tlora.rms_norm %x, %nw eps(1.0e-5) : tensor<?x32xf32>, tensor<32xf32> -> tensor<?x32xf32>
  %w1 = tlora.ternary_weight "a" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 32>
  %w2 = tlora.ternary_weight "b" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 32>
  %q1 = tlora.quantize %h : tensor<?x32xf32> -> !tlora.qact<features = 32>
  %y1 = tlora.ternary_matmul %q1, %w1 : !tlora.qact<features = 32>, !tlora.ternary<outFeatures = 64, inFeatures = 32> -> tensor<?x64xf32>
  %q2 = tlora.quantize %x : tensor<?x32xf32> -> !tlora.qact<features = 32>
  %y2 = tlora.ternary_matmul %q2, %w2 : !tlora.qact<features = 32>, !tlora.ternary<outFeatures = 64, inFeatures = 32> -> tensor<?x64xf32>
  %s = arith.addf %y1, %y2 : tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// Products of one quantized input (q/k/v) become one grouped dispatch whose
// workload is the sum of their 64-column units, placed after the last
// weight; a product whose input differs stays alone.
// CHECK-LABEL: func.func @decode
// CHECK: %[[Q:.*]] = tlora.dispatch @kernels::@quantize_k64_t1
// CHECK: %{{.*}}:3 = tlora.dispatch @kernels::@ternary_matmul_n64x128x16_k64_t1(%[[Q]], %{{.*}}, %{{.*}}, %{{.*}}) workload(0 * T + 4)
// CHECK: module @kernels
// CHECK: func.func @ternary_matmul_n64x128x16_k64_t1
// CHECK: tlora.microkernel_call @tlc_k_ternary_matmul_group3
func.func @decode(%x: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x128xf32>, tensor<?x16xf32>) attributes {tlora.max_tokens = 1 : i64} {
  %q = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %wq = tlora.ternary_weight "q" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 64>
  %a = tlora.ternary_matmul %q, %wq : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 64, inFeatures = 64> -> tensor<?x64xf32>
  %wk = tlora.ternary_weight "k" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 128, inFeatures = 64>
  %b = tlora.ternary_matmul %q, %wk : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 128, inFeatures = 64> -> tensor<?x128xf32>
  %wv = tlora.ternary_weight "v" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 64>
  %c = tlora.ternary_matmul %q, %wv : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 16, inFeatures = 64> -> tensor<?x16xf32>
  return %a, %b, %c : tensor<?x64xf32>, tensor<?x128xf32>, tensor<?x16xf32>
}

// -----

// A LoRA adapter's contribution is one row-parallel kernel per shape.
// CHECK-LABEL: func.func @adapter
// CHECK: tlora.dispatch @kernels::@lora_r4_k64_n32_f32_s{{[0-9A-F]+}}_t2(%{{.*}}, %{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: tlora.microkernel_call @tlc_k_lora_f32(
func.func @adapter(%x: tensor<?x64xf32>) -> tensor<?x32xf32> attributes {tlora.max_tokens = 2 : i64} {
  %a = tlora.weight "a" : tensor<4x64xf32>
  %b = tlora.weight "b" : tensor<32x4xf32>
  %d = tlora.lora %x, %a, %b scaling(2.0) : tensor<?x64xf32>, tensor<4x64xf32>, tensor<32x4xf32> -> tensor<?x32xf32>
  return %d : tensor<?x32xf32>
}

// -----

// A float32 LoRA branch added to its ternary product fuses: a per-token
// down-projection, then the product with the up-projection in its epilogue
// (no separate LoRA kernel, no addition pass). bf16 adapters stay unfused.
// CHECK-LABEL: func.func @lora_fused
// CHECK: %[[Q:.*]] = tlora.dispatch @kernels::@quantize_k32_t8
// CHECK: %[[U:.*]] = tlora.dispatch @kernels::@lora_down_{{[0-9A-F]+}}_t8(%{{.*}}, %{{.*}}) workload(1 * T + 0) : (tensor<?x32xf32>, tensor<4x32xf32>) -> tensor<?x4xf32>
// CHECK: tlora.dispatch @kernels::@ternary_lora_{{[0-9A-F]+}}_t8(%[[Q]], %{{.*}}, %[[U]], %{{.*}}) workload(0 * T + 1)
// CHECK-NOT: add_d64
// CHECK: tlora.microkernel_call @tlc_k_ternary_lora(
func.func @lora_fused(%x: tensor<?x32xf32>) -> tensor<?x64xf32> attributes {tlora.max_tokens = 8 : i64} {
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 32>
  %q = tlora.quantize %x : tensor<?x32xf32> -> !tlora.qact<features = 32>
  %y = tlora.ternary_matmul %q, %w : !tlora.qact<features = 32>, !tlora.ternary<outFeatures = 64, inFeatures = 32> -> tensor<?x64xf32>
  %a = tlora.trainable "a" : tensor<4x32xf32>
  %b = tlora.trainable "b" : tensor<64x4xf32>
  %l = tlora.lora %x, %a, %b scaling(2.0) : tensor<?x32xf32>, tensor<4x32xf32>, tensor<64x4xf32> -> tensor<?x64xf32>
  %s = arith.addf %y, %l : tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}

// -----

// Kernels are built with builders: the elementwise add is a loop nest over
// rows [begin, end) of [T x D] buffers.
// CHECK-LABEL: func.func @sum
// CHECK: func.func @add_d16_t4(%[[A:[a-z0-9]+]]: memref<4x16xf32>, %[[B:[a-z0-9]+]]: memref<4x16xf32>, %[[O:[a-z0-9]+]]: memref<4x16xf32>, %{{[a-z0-9]+}}: index, %{{[a-z0-9]+}}: index, %{{[a-z0-9]+}}: index, %[[BEGIN:[a-z0-9]+]]: index, %[[END:[a-z0-9]+]]: index) attributes {tlora.kernel}
// CHECK: scf.for %[[T:[a-z0-9]+]] = %[[BEGIN]] to %[[END]]
// CHECK: scf.for %[[D:[a-z0-9]+]] = %{{[a-z0-9]+}} to %c16
// CHECK: memref.load %[[A]][%[[T]], %[[D]]]
// CHECK: memref.load %[[B]][%[[T]], %[[D]]]
// CHECK: arith.addf
// CHECK: memref.store %{{.*}}, %[[O]][%[[T]], %[[D]]]
func.func @sum(%x: tensor<?x16xf32>, %y: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {tlora.max_tokens = 4 : i64} {
  %s = arith.addf %x, %y : tensor<?x16xf32>
  return %s : tensor<?x16xf32>
}

// -----

// A kernel of a C microkernel takes its buffers as byte memrefs sized for
// the token capacity (x: 8 x 32 f32; q: 8 x 32 int8 + 8 bytes of scale and
// sum per token) and passes them, its constants and the work range on.
// CHECK-LABEL: func.func @quantize
// CHECK: func.func private @tlc_k_quantize(!llvm.ptr, !llvm.ptr, index, index, index, index)
// CHECK: func.func @quantize_k32_t8(%[[X:[a-z0-9]+]]: memref<1024xi8>, %[[Q:[a-z0-9]+]]: memref<320xi8>, %{{[a-z0-9]+}}: index, %{{[a-z0-9]+}}: index, %{{[a-z0-9]+}}: index, %[[BEGIN:[a-z0-9]+]]: index, %[[END:[a-z0-9]+]]: index) attributes {tlora.kernel}
// CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
// CHECK-DAG: %[[C32:.*]] = arith.constant 32 : index
// CHECK: tlora.microkernel_call @tlc_k_quantize(%[[X]], %[[Q]], %[[C8]], %[[C32]], %[[BEGIN]], %[[END]]) : memref<1024xi8>, memref<320xi8>, index, index, index, index
func.func @quantize(%x: tensor<?x32xf32>) -> !tlora.qact<features = 32> attributes {tlora.max_tokens = 8 : i64} {
  %q = tlora.quantize %x : tensor<?x32xf32> -> !tlora.qact<features = 32>
  return %q : !tlora.qact<features = 32>
}

// -----

// RMS norm: a sum of squares (reassociable, so it vectorizes), rsqrt of
// mean + eps, then the bf16 weight widened to f32.
// CHECK-LABEL: func.func @norm
// CHECK: func.func @rms_norm_d16_bf16_eps{{[0-9A-F]+}}_t2(%[[X:[a-z0-9]+]]: memref<2x16xf32>, %[[W:[a-z0-9]+]]: memref<16xbf16>, %[[O:[a-z0-9]+]]: memref<2x16xf32>
// CHECK: %[[SS:.*]] = scf.for {{.*}} iter_args(%[[ACC:.*]] = %{{.*}}) -> (f32)
// CHECK: %[[SQ:.*]] = arith.mulf
// CHECK: arith.addf %[[ACC]], %[[SQ]] fastmath<reassoc> : f32
// CHECK: arith.divf %[[SS]]
// CHECK: math.rsqrt
// CHECK: arith.extf %{{.*}} : bf16 to f32
// CHECK: memref.store %{{.*}}, %[[O]]
func.func @norm(%x: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {tlora.max_tokens = 2 : i64} {
  %w = tlora.weight "n" : tensor<16xbf16>
  %h = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x16xf32>, tensor<16xbf16> -> tensor<?x16xf32>
  return %h : tensor<?x16xf32>
}

// -----

// RoPE: inv_freq = 1 / theta^(2i/hd) in float32 as a constant global beside
// the kernel (hd = 4, theta = 10000: 1 and 0.01); angle = (pos + t) inv_freq.
// CHECK-LABEL: func.func @rotate
// CHECK: memref.global "private" constant @rope_d8_hd4_theta10000_t2_inv_freq : memref<2xf32> = dense<[1.000000e+00, 0.00999999977]>
// CHECK: func.func @rope_d8_hd4_theta10000_t2(
// CHECK: memref.get_global @rope_d8_hd4_theta10000_t2_inv_freq
// CHECK: math.cos
// CHECK: math.sin
func.func @rotate(%x: tensor<?x8xf32>, %p: index) -> tensor<?x8xf32> attributes {tlora.max_tokens = 2 : i64} {
  %r = tlora.rope %x at %p head_dim(4) theta(10000.0) : tensor<?x8xf32> -> tensor<?x8xf32>
  return %r : tensor<?x8xf32>
}
