// RUN: tlc-opt %s -split-input-file -tlora-differentiate -verify-diagnostics | FileCheck %s

// One LoRA layer on a frozen ternary product, its RMS norm and the fused
// cross-entropy loss. The backward runs in reverse order; the input x does
// not depend on an adapter, so no gradient flows into the embedding; the
// ternary layer's input gradient uses the packed weights (straight-through).
// CHECK-LABEL: func.func @step
// CHECK: %[[Y:.*]] = tlora.ternary_linear %[[H:.*]], %[[W:.*]] :
// CHECK: %[[L:.*]] = tlora.lora %[[H]], %[[A:.*]], %[[B:.*]] scaling
// CHECK: %[[S:.*]] = arith.addf %[[Y]], %[[L]]
// CHECK: %[[N:.*]] = tlora.rms_norm %[[S]], %[[NW:.*]] eps
// CHECK: %[[LOSS:.*]], %[[LSE:.*]] = tlora.cross_entropy %[[N]]
// CHECK: %[[MEAN:.*]] = tlora.mean_loss %[[LOSS]]
// CHECK: %[[HY:.*]] = tlora.hyper : tensor<16xf32>
// CHECK: %[[SEED:.*]] = tlora.loss_scale %[[HY]]
// CHECK: %[[DL:.*]] = tlora.mean_loss_grad %[[SEED]]
// CHECK: %[[DN:.*]] = tlora.cross_entropy_grad %[[N]], %{{.*}}, %{{.*}}, %[[LSE]], %[[DL]]
// CHECK: %[[DS:.*]] = tlora.rms_norm_grad %[[S]], %[[NW]], %[[DN]]
// CHECK: %{{.*}}, %[[DA:.*]], %[[DB:.*]] = tlora.lora_grad %[[H]], %[[A]], %[[B]], %[[DS]]
// CHECK-NOT: tlora.ternary_matmul_transposed
// CHECK: tlora.accumulate_grad %[[DA]] into "a"
// CHECK: tlora.accumulate_grad %[[DB]] into "b"
// CHECK: tlora.optimizer_step <adamw>, %[[HY]]
// CHECK: return %[[MEAN]]
func.func @step(%ids: tensor<?xi32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<adamw>} {
  %table = tlora.weight "embed" : tensor<32x16xbf16>
  %h = tlora.embed %table[%ids] : tensor<32x16xbf16>, tensor<?xi32> -> tensor<?x16xf32>
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 16>
  %y = tlora.ternary_linear %h, %w : tensor<?x16xf32>, !tlora.ternary<outFeatures = 16, inFeatures = 16> -> tensor<?x16xf32>
  %a = tlora.trainable "a" : tensor<2x16xf32>
  %b = tlora.trainable "b" : tensor<16x2xf32>
  %l = tlora.lora %h, %a, %b scaling(2.0) : tensor<?x16xf32>, tensor<2x16xf32>, tensor<16x2xf32> -> tensor<?x16xf32>
  %s = arith.addf %y, %l : tensor<?x16xf32>
  %nw = tlora.weight "norm" : tensor<16xbf16>
  %n = tlora.rms_norm %s, %nw eps(1.0e-5) : tensor<?x16xf32>, tensor<16xbf16> -> tensor<?x16xf32>
  %loss, %lse = tlora.cross_entropy %n, %table, %labels : (tensor<?x16xf32>, tensor<32x16xbf16>, tensor<?xi32>) -> (tensor<?xf32>, tensor<?xf32>)
  %mean = tlora.mean_loss %loss, %labels : (tensor<?xf32>, tensor<?xi32>) -> tensor<1xf32>
  return %mean : tensor<1xf32>
}

// -----

// A second layer: its input depends on the first adapter, so the gradient
// flows back through the frozen ternary product on the packed weights and
// the two contributions to the shared input are summed.
// CHECK-LABEL: func.func @two_layers
// CHECK: tlora.lora_grad
// CHECK: %[[DT:.*]] = tlora.ternary_matmul_transposed
// CHECK: arith.addf %{{.*}}, %[[DT]]
// CHECK: tlora.lora_grad
// CHECK: tlora.optimizer_step <sgd>
func.func @two_layers(%ids: tensor<?xi32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<sgd>} {
  %table = tlora.weight "embed" : tensor<32x16xf32>
  %h = tlora.embed %table[%ids] : tensor<32x16xf32>, tensor<?xi32> -> tensor<?x16xf32>
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 16>
  %a = tlora.trainable "a" : tensor<2x16xf32>
  %b = tlora.trainable "b" : tensor<16x2xf32>
  %y = tlora.ternary_linear %h, %w : tensor<?x16xf32>, !tlora.ternary<outFeatures = 16, inFeatures = 16> -> tensor<?x16xf32>
  %l = tlora.lora %h, %a, %b scaling(2.0) : tensor<?x16xf32>, tensor<2x16xf32>, tensor<16x2xf32> -> tensor<?x16xf32>
  %s = arith.addf %y, %l : tensor<?x16xf32>
  %y2 = tlora.ternary_linear %s, %w : tensor<?x16xf32>, !tlora.ternary<outFeatures = 16, inFeatures = 16> -> tensor<?x16xf32>
  %a2 = tlora.trainable "a2" : tensor<2x16xf32>
  %b2 = tlora.trainable "b2" : tensor<16x2xf32>
  %l2 = tlora.lora %s, %a2, %b2 scaling(2.0) : tensor<?x16xf32>, tensor<2x16xf32>, tensor<16x2xf32> -> tensor<?x16xf32>
  %s2 = arith.addf %y2, %l2 : tensor<?x16xf32>
  %loss, %lse = tlora.cross_entropy %s2, %table, %labels : (tensor<?x16xf32>, tensor<32x16xf32>, tensor<?xi32>) -> (tensor<?xf32>, tensor<?xf32>)
  %mean = tlora.mean_loss %loss, %labels : (tensor<?xf32>, tensor<?xi32>) -> tensor<1xf32>
  return %mean : tensor<1xf32>
}

// -----

// An op without a differentiation rule on the path from an adapter.
func.func @no_rule(%ids: tensor<?xi32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<sgd>} {
  %table = tlora.weight "embed" : tensor<32x16xf32>
  %h = tlora.embed %table[%ids] : tensor<32x16xf32>, tensor<?xi32> -> tensor<?x16xf32>
  %a = tlora.trainable "a" : tensor<2x16xf32>
  %b = tlora.trainable "b" : tensor<16x2xf32>
  %l = tlora.lora %h, %a, %b scaling(2.0) : tensor<?x16xf32>, tensor<2x16xf32>, tensor<16x2xf32> -> tensor<?x16xf32>
  // expected-error @+1 {{has no differentiation rule}}
  %m = arith.mulf %l, %h : tensor<?x16xf32>
  %loss, %lse = tlora.cross_entropy %m, %table, %labels : (tensor<?x16xf32>, tensor<32x16xf32>, tensor<?xi32>) -> (tensor<?xf32>, tensor<?xf32>)
  %mean = tlora.mean_loss %loss, %labels : (tensor<?xf32>, tensor<?xi32>) -> tensor<1xf32>
  return %mean : tensor<1xf32>
}

// -----

// expected-error @+1 {{the loss does not depend on any adapter}}
func.func @no_adapter(%ids: tensor<?xi32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<sgd>} {
  %table = tlora.weight "embed" : tensor<32x16xf32>
  %h = tlora.embed %table[%ids] : tensor<32x16xf32>, tensor<?xi32> -> tensor<?x16xf32>
  %loss, %lse = tlora.cross_entropy %h, %table, %labels : (tensor<?x16xf32>, tensor<32x16xf32>, tensor<?xi32>) -> (tensor<?xf32>, tensor<?xf32>)
  %mean = tlora.mean_loss %loss, %labels : (tensor<?xf32>, tensor<?xi32>) -> tensor<1xf32>
  return %mean : tensor<1xf32>
}

// -----

// With tlora.recompute, a layer's forward ops (tlora.layer) are cloned right
// before its backward and the adjoint rules read the clones.
// CHECK-LABEL: func.func @recompute
// CHECK: %[[N:.*]] = tlora.rms_norm %[[X:[^,]*]], %[[W:[^ ]*]] eps{{.*}}tlora.layer = 0
// CHECK: tlora.mean_loss
// CHECK: %[[R:.*]] = tlora.rms_norm %[[X]], %[[W]] eps{{.*}}tlora.recomputed
// CHECK: tlora.lora_grad %[[R]]
// CHECK-NOT: tlora.lora_grad %[[N]]
func.func @recompute(%ids: tensor<?xi32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<sgd>, tlora.recompute} {
  %table = tlora.weight "embed" : tensor<32x16xf32>
  %x = tlora.embed %table[%ids] : tensor<32x16xf32>, tensor<?xi32> -> tensor<?x16xf32>
  %w = tlora.weight "norm" : tensor<16xf32>
  %n = tlora.rms_norm %x, %w eps(1.0e-5) {tlora.layer = 0 : i64} : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x16xf32>
  %a = tlora.trainable "a" {tlora.layer = 0 : i64} : tensor<2x16xf32>
  %b = tlora.trainable "b" {tlora.layer = 0 : i64} : tensor<16x2xf32>
  %l = tlora.lora %n, %a, %b scaling(2.0) {tlora.layer = 0 : i64} : tensor<?x16xf32>, tensor<2x16xf32>, tensor<16x2xf32> -> tensor<?x16xf32>
  %s = arith.addf %x, %l {tlora.layer = 0 : i64} : tensor<?x16xf32>
  %loss, %lse = tlora.cross_entropy %s, %table, %labels : (tensor<?x16xf32>, tensor<32x16xf32>, tensor<?xi32>) -> (tensor<?xf32>, tensor<?xf32>)
  %mean = tlora.mean_loss %loss, %labels : (tensor<?xf32>, tensor<?xi32>) -> tensor<1xf32>
  return %mean : tensor<1xf32>
}
