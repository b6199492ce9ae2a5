// RUN: tlc-opt %s -tlora-decompose-linear -cse | FileCheck %s

// Two layers reading one input share a single quantization after CSE.
// CHECK-LABEL: func.func @shared
// CHECK: %[[Q:.*]] = tlora.quantize %arg0 : tensor<?x16xf32> -> !tlora.qact<features = 16>
// CHECK-NOT: tlora.quantize
// CHECK: tlora.ternary_matmul %[[Q]], %{{.*}} : !tlora.qact<features = 16>, !tlora.ternary<outFeatures = 8, inFeatures = 16> -> tensor<?x8xf32>
// CHECK: tlora.ternary_matmul %[[Q]], %{{.*}} : !tlora.qact<features = 16>, !tlora.ternary<outFeatures = 4, inFeatures = 16> -> tensor<?x4xf32>
// CHECK-NOT: tlora.ternary_linear
func.func @shared(%x: tensor<?x16xf32>) -> (tensor<?x8xf32>, tensor<?x4xf32>) {
  %w1 = tlora.ternary_weight "a" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 8, inFeatures = 16>
  %w2 = tlora.ternary_weight "b" scale(2.0) source(master) : !tlora.ternary<outFeatures = 4, inFeatures = 16>
  %y1 = tlora.ternary_linear %x, %w1 : tensor<?x16xf32>, !tlora.ternary<outFeatures = 8, inFeatures = 16> -> tensor<?x8xf32>
  %y2 = tlora.ternary_linear %x, %w2 : tensor<?x16xf32>, !tlora.ternary<outFeatures = 4, inFeatures = 16> -> tensor<?x4xf32>
  return %y1, %y2 : tensor<?x8xf32>, tensor<?x4xf32>
}
