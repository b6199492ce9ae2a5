// RUN: tlc-opt %s -tlc-llvmcpu-form-dispatches | FileCheck %s

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
  %w1 = tlora.ternary_weight "a" scale(1.0) source("packed") : !tlora.ternary<outFeatures = 64, inFeatures = 32>
  %w2 = tlora.ternary_weight "b" scale(1.0) source("packed") : !tlora.ternary<outFeatures = 64, inFeatures = 32>
  %q1 = tlora.quantize %h : tensor<?x32xf32> -> !tlora.qact<features = 32>
  %y1 = tlora.ternary_matmul %q1, %w1 : !tlora.qact<features = 32>, !tlora.ternary<outFeatures = 64, inFeatures = 32> -> tensor<?x64xf32>
  %q2 = tlora.quantize %x : tensor<?x32xf32> -> !tlora.qact<features = 32>
  %y2 = tlora.ternary_matmul %q2, %w2 : !tlora.qact<features = 32>, !tlora.ternary<outFeatures = 64, inFeatures = 32> -> tensor<?x64xf32>
  %s = arith.addf %y1, %y2 : tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}
