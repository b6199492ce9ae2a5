// RUN: tlc-opt %s -split-input-file -tlc-gpu-form-dispatches=max-binding-bytes=1024 | FileCheck %s
// RUN: not tlc-opt %s -split-input-file -tlc-gpu-form-dispatches=max-binding-bytes=256 2>&1 | FileCheck %s --check-prefix=OVER

// With bindings of at most 1 KiB, a [100 x 8] f32 table (3200 bytes) is
// bound as row ranges of 32 rows (1024 bytes, each starting 256-aligned):
// four tlora.weight_rows views, one kernel that picks the range by row.
// CHECK-LABEL: func.func @prefill
// CHECK: %[[W:.*]] = tlora.weight "embed" : tensor<100x8xf32>
// CHECK: %[[R0:.*]] = tlora.weight_rows %[[W]][0] : tensor<100x8xf32> -> tensor<32x8xf32>
// CHECK: %[[R1:.*]] = tlora.weight_rows %[[W]][32] : tensor<100x8xf32> -> tensor<32x8xf32>
// CHECK: %[[R2:.*]] = tlora.weight_rows %[[W]][64] : tensor<100x8xf32> -> tensor<32x8xf32>
// CHECK: %[[R3:.*]] = tlora.weight_rows %[[W]][96] : tensor<100x8xf32> -> tensor<4x8xf32>
// CHECK: tlora.dispatch @kernels::@embed_v100_d8_f32_rows32_t2(%[[R0]], %[[R1]], %[[R2]], %[[R3]], %arg0)
// CHECK: tlora.dispatch @kernels::@dense_n100_k8_f32_v16_rows32_t2(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}})
// CHECK: gpu.func @embed_v100_d8_f32_rows32_t2(%{{.*}}: memref<32x8xf32>, %{{.*}}: memref<32x8xf32>, %{{.*}}: memref<32x8xf32>, %{{.*}}: memref<4x8xf32>, %{{.*}}: memref<2xi32>, %{{.*}}: memref<2x8xf32>
// CHECK: arith.cmpi ult
// CHECK: scf.if
// The LM head picks a row's range once, around the whole row's product (a
// branch per element would serialize the loads): range 0's loads sit in the
// first branch with the row's activations, range 1's in the next. Rows of 32
// bytes are read as 16-byte vectors.
// CHECK: gpu.func @dense_n100_k8_f32_v16_rows32_t2(%[[X:[^:]*]]: memref<4xvector<4xf32>>, %[[D0:[^:]*]]: memref<64xvector<4xf32>>, %[[D1:[^:]*]]: memref<64xvector<4xf32>>
// CHECK: %[[IN0:.*]] = arith.cmpi ult, %{{.*}}, %c32
// CHECK-NEXT: scf.if %[[IN0]] -> (f32)
// CHECK-NOT: } else {
// CHECK: memref.load %[[D0]]
// CHECK-NOT: } else {
// CHECK: memref.load %[[X]]
// CHECK: } else {
// CHECK: arith.cmpi ult, %{{.*}}, %c64
// CHECK-NOT: } else {
// CHECK: memref.load %[[D1]]
// OVER: error: kernel dense_n100_k8_f32_v16_rows8_t2 would bind 800 bytes ('tensor<?x100xf32>'), over the target's 256-byte storage buffer range (only weights and the training state are split into ranges)
func.func @prefill(%ids: tensor<?xi32>, %rows: index) -> tensor<?x100xf32> attributes {tlora.max_tokens = 2 : i64} {
  %w = tlora.weight "embed" : tensor<100x8xf32>
  %x = tlora.embed %w[%ids] : tensor<100x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
  %l = tlora.dense %x, %w rows(%rows) : tensor<?x8xf32>, tensor<100x8xf32> -> tensor<?x100xf32>
  return %l : tensor<?x100xf32>
}

// -----

// The training state (here 384 adapter values: 1536 bytes per section) is
// bound in ranges of 256 values: partial sums of squares per range (a
// workgroup per block of 64K values), one kernel adding them in order, then the optimizer per range over its four
// section views (parameters, gradients, two moments).
// CHECK-LABEL: func.func @train_step
// CHECK: %[[G0:.*]] = tlora.train_state {first = 384 : i64} : tensor<256xf32>
// CHECK: %[[S0:.*]] = tlora.dispatch @kernels::@grad_sq_sum_p256_g1_t8(%[[G0]], %[[H:.*]]) workload(0 * T + 1) : (tensor<256xf32>, tensor<16xf32>) -> tensor<1xf32>
// CHECK: %[[G1:.*]] = tlora.train_state {first = 640 : i64} : tensor<128xf32>
// CHECK: %[[S1:.*]] = tlora.dispatch @kernels::@grad_sq_sum_p128_g1_t8(%[[G1]], %[[H]])
// CHECK: tlora.dispatch @kernels::@grad_norm_of2_in2_t8(%[[S0]], %[[S1]], %[[H]])
// CHECK: tlora.train_state : tensor<256xf32>
// CHECK: tlora.train_state {first = 1152 : i64} : tensor<256xf32>
// CHECK: tlora.dispatch @kernels::@adamw_p256_t8(
// CHECK: tlora.train_state {first = 256 : i64} : tensor<128xf32>
// CHECK: tlora.train_state {first = 1408 : i64} : tensor<128xf32>
// CHECK: tlora.dispatch @kernels::@adamw_p128_t8(
func.func @train_step(%labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<adamw>, tlora.seq_len = 4 : i64} {
  %a = tlora.trainable "a" : tensor<4x64xf32>
  %b = tlora.trainable "b" : tensor<32x4xf32>
  %h = tlora.hyper : tensor<16xf32>
  tlora.optimizer_step <adamw>, %h : tensor<16xf32>
  %l = arith.constant dense<0.0> : tensor<1xf32>
  return %l : tensor<1xf32>
}

// -----

// Decode: a row of 64 f32 (256 bytes) per range of 4 rows. The token's
// range is chosen once; each invocation loads its element of the row, then
// stores it (every load before the stores).
// CHECK-LABEL: func.func @decode_embed
// CHECK: gpu.func @embed_v10_d64_f32_rows4_t1(%[[E0:[^:]*]]: memref<4x64xf32>, %[[E1:[^:]*]]: memref<4x64xf32>, %[[E2:[^:]*]]: memref<2x64xf32>, %{{.*}}: memref<1xi32>, %[[OUT:[^:]*]]: memref<1x64xf32>
// CHECK: arith.cmpi ult, %{{.*}}, %c4
// CHECK-NEXT: scf.if
// CHECK: %[[V:.*]] = memref.load %[[E0]]
// CHECK-NEXT: memref.store %[[V]], %[[OUT]]
// CHECK: } else {
// CHECK: memref.load %[[E1]]
func.func @decode_embed(%ids: tensor<?xi32>) -> tensor<?x64xf32> attributes {tlora.max_tokens = 1 : i64} {
  %w = tlora.weight "embed" : tensor<10x64xf32>
  %x = tlora.embed %w[%ids] : tensor<10x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  return %x : tensor<?x64xf32>
}
