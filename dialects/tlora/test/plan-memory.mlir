// RUN: tlc-opt %s -split-input-file -tlora-plan-memory | FileCheck %s

// Capacity 4 tokens: each [?x16xf32] value needs 256 bytes. %a dies after
// its last use, so %c reuses its range; %b stays live until the end.
// CHECK-LABEL: func.func @plan
// CHECK-SAME: tlora.arena_size = 512
// CHECK: @kernels::@k1{{.*}}bindings = [#tlora.slot<space = input, offset = 0, size = 16>, #tlora.slot<space = arena, offset = 0, size = 256>]
// CHECK: @kernels::@k2{{.*}}bindings = [#tlora.slot<space = arena, offset = 0, size = 256>, #tlora.slot<space = arena, offset = 256, size = 256>]
// CHECK: @kernels::@k3{{.*}}bindings = [#tlora.slot<space = arena, offset = 256, size = 256>, #tlora.slot<space = param, offset = 0, size = 64, name = "w">, #tlora.slot<space = arena, offset = 0, size = 256>]
// CHECK: @kernels::@k4{{.*}}bindings = [#tlora.slot<space = arena, offset = 0, size = 256>, #tlora.slot<space = arena, offset = 256, size = 256>, #tlora.slot<space = output, offset = 0, size = 256>]
func.func @plan(%ids: tensor<?xi32>) -> tensor<?x16xf32> attributes {tlora.max_tokens = 4 : i64} {
  %w = tlora.weight "w" : tensor<16xf32>
  %a = tlora.dispatch @kernels::@k1(%ids) workload(1 * T + 0) : (tensor<?xi32>) -> tensor<?x16xf32>
  %b = tlora.dispatch @kernels::@k2(%a) workload(1 * T + 0) : (tensor<?x16xf32>) -> tensor<?x16xf32>
  %c = tlora.dispatch @kernels::@k3(%b, %w) workload(1 * T + 0) : (tensor<?x16xf32>, tensor<16xf32>) -> tensor<?x16xf32>
  %d = tlora.dispatch @kernels::@k4(%c, %b) workload(1 * T + 0) : (tensor<?x16xf32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %d : tensor<?x16xf32>
}

// -----

// Training: adapters and their gradient accumulators live in the state
// (gradients after all P = 16-aligned adapter elements), the loss scale is a
// view into the hyper block (tlc_train_hyper_t.loss_scale at byte 24), the
// second argument is the labels, the returned loss the output.
// CHECK-LABEL: func.func @train_step
// CHECK: @kernels::@fwd{{.*}}bindings = [#tlora.slot<space = input, offset = 0, size = 16>, #tlora.slot<space = state, offset = 0, size = 32, name = "a">, #tlora.slot<space = state, offset = 64, size = 32, name = "b">, #tlora.slot<space = arena, offset = 0, size = 16>]
// CHECK: @kernels::@loss{{.*}}bindings = [#tlora.slot<space = arena, offset = 0, size = 16>, #tlora.slot<space = labels, offset = 0, size = 16>, #tlora.slot<space = hyper, offset = 24, size = 4>, #tlora.slot<space = output, offset = 0, size = 4>]
// CHECK: @kernels::@acc{{.*}}bindings = [#tlora.slot<space = state, offset = 0, size = 32, name = "a">, #tlora.slot<space = state, offset = 128, size = 32, name = "a">]
func.func @train_step(%ids: tensor<?xi32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 4 : i64, tlora.optimizer = #tlora.optimizer<sgd>} {
  %a = tlora.trainable "a" : tensor<2x4xf32>
  %b = tlora.trainable "b" : tensor<4x2xf32>
  %h = tlora.hyper : tensor<16xf32>
  %seed = tlora.loss_scale %h : tensor<16xf32> -> tensor<1xf32>
  %x = tlora.dispatch @kernels::@fwd(%ids, %a, %b) workload(1 * T + 0) : (tensor<?xi32>, tensor<2x4xf32>, tensor<4x2xf32>) -> tensor<?xf32>
  %l = tlora.dispatch @kernels::@loss(%x, %labels, %seed) workload(0 * T + 1) : (tensor<?xf32>, tensor<?xi32>, tensor<1xf32>) -> tensor<1xf32>
  %g = tlora.trainable "a" {gradient} : tensor<2x4xf32>
  tlora.dispatch @kernels::@acc(%a, %g) workload(0 * T + 1) : (tensor<2x4xf32>, tensor<2x4xf32>) -> ()
  return %l : tensor<1xf32>
}

// -----

// Views: rows [32, 64) of a [100 x 8] f32 parameter bind bytes [1024, 2048)
// of it; words [384, 640) of the training state bind bytes [1536, 2560).
// CHECK-LABEL: func.func @views
// CHECK: @kernels::@k{{.*}}bindings = [#tlora.slot<space = param, offset = 1024, size = 1024, name = "embed">, #tlora.slot<space = state, offset = 1536, size = 1024>]
func.func @views(%ids: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 4 : i64, tlora.optimizer = #tlora.optimizer<sgd>} {
  %w = tlora.weight "embed" : tensor<100x8xf32>
  %r = tlora.weight_rows %w[32] : tensor<100x8xf32> -> tensor<32x8xf32>
  %s = tlora.train_state {first = 384 : i64} : tensor<256xf32>
  tlora.dispatch @kernels::@k(%r, %s) workload(0 * T + 1) : (tensor<32x8xf32>, tensor<256xf32>) -> ()
  %l = arith.constant dense<0.0> : tensor<1xf32>
  return %l : tensor<1xf32>
}
