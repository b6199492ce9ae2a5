// RUN: tlc-opt %s -split-input-file -tlc-gpu-form-dispatches | FileCheck %s

// One workgroup of 64 invocations per token row; a kernel takes its buffers,
// then T, pos and rows as i32. Two additions of one shape share a kernel.
// CHECK-LABEL: func.func @rows
// CHECK: tlora.dispatch @kernels::@add_d80_t4(%{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: tlora.dispatch @kernels::@add_d80_t4(%{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: gpu.module @kernels
// CHECK: gpu.func @add_d80_t4(%[[A:.*]]: memref<4x80xf32>, %[[B:.*]]: memref<4x80xf32>, %[[O:.*]]: memref<4x80xf32>, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32) kernel attributes {known_block_size = array<i32: 64, 1, 1>, tlora.kernel}
// CHECK: %[[T:.*]] = gpu.block_id x
// CHECK: %[[L:.*]] = gpu.thread_id x
// CHECK: scf.for %[[D:.*]] = %[[L]] to %c80{{.*}} step %c64
// CHECK: memref.load %[[A]][%[[T]], %[[D]]]
// CHECK: memref.store %{{.*}}, %[[O]][%[[T]], %[[D]]]
// CHECK-NOT: gpu.func @add_d80_t4
func.func @rows(%x: tensor<?x80xf32>, %y: tensor<?x80xf32>) -> tensor<?x80xf32> attributes {tlora.max_tokens = 4 : i64} {
  %s = arith.addf %x, %y : tensor<?x80xf32>
  %t = arith.addf %s, %y : tensor<?x80xf32>
  return %t : tensor<?x80xf32>
}

// -----

// RMS norm: strided partial sums in workgroup memory, summed in a fixed
// order by invocation 0 (deterministic), between barriers. bf16 weights are
// read as 32-bit words (no 16-bit storage needed) and widened exactly.
// CHECK-LABEL: func.func @norm
// CHECK: gpu.func @rms_norm_d64_bf16_eps{{[0-9A-F]+}}_t2(%{{.*}}: memref<2x64xf32>, %{{.*}}: memref<32xi32>, %{{.*}}: memref<2x64xf32>
// CHECK: %[[P:.*]] = memref.alloc() : memref<64xf32, 3>
// CHECK: gpu.barrier
// CHECK: scf.if
// CHECK: math.sqrt
// CHECK: gpu.barrier
// CHECK: arith.shli
// CHECK: arith.bitcast %{{.*}} : i32 to f32
func.func @norm(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {tlora.max_tokens = 2 : i64} {
  %w = tlora.weight "n" : tensor<64xbf16>
  %h = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x64xf32>, tensor<64xbf16> -> tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

