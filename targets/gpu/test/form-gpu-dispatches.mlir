// RUN: tlc-opt %s -split-input-file -tlc-gpu-form-dispatches | FileCheck %s
// RUN: tlc-opt %s -split-input-file -tlc-gpu-form-dispatches=integer-dot=true | FileCheck %s --check-prefix=DOT

// Many tokens: one workgroup of 64 invocations per token row; a kernel takes
// its buffers, then T, pos and rows as i32. Two additions of one shape share
// a kernel.
// CHECK-LABEL: func.func @rows
// CHECK: tlora.dispatch @kernels::@add_d80_t16(%{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: tlora.dispatch @kernels::@add_d80_t16(%{{.*}}, %{{.*}}) workload(1 * T + 0)
// CHECK: gpu.module @kernels
// CHECK: gpu.func @add_d80_t16(%[[A:.*]]: memref<16x80xf32>, %[[B:.*]]: memref<16x80xf32>, %[[O:.*]]: memref<16x80xf32>, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32) kernel attributes {known_block_size = array<i32: 64, 1, 1>, tlora.kernel}
// CHECK: %[[T:.*]] = gpu.block_id x
// CHECK: %[[L:.*]] = gpu.thread_id x
// CHECK: scf.for %[[D:.*]] = %[[L]] to %c80{{.*}} step %c64
// CHECK: memref.load %[[A]][%[[T]], %[[D]]]
// CHECK: memref.store %{{.*}}, %[[O]][%[[T]], %[[D]]]
// CHECK-NOT: gpu.func @add_d80_t16
func.func @rows(%x: tensor<?x80xf32>, %y: tensor<?x80xf32>) -> tensor<?x80xf32> attributes {tlora.max_tokens = 16 : i64} {
  %s = arith.addf %x, %y : tensor<?x80xf32>
  %t = arith.addf %s, %y : tensor<?x80xf32>
  return %t : tensor<?x80xf32>
}

// -----

// A few tokens (decode): a row is spread over ceil(80 / 64) = 2 workgroups
// of one element per invocation, so one token still fills the GPU.
// CHECK-LABEL: func.func @few_rows
// CHECK: tlora.dispatch @kernels::@add_d80_t4(%{{.*}}, %{{.*}}) workload(2 * T + 0)
// CHECK: gpu.func @add_d80_t4(%[[A:.*]]: memref<4x80xf32>, %{{.*}}: memref<4x80xf32>, %[[O:.*]]: memref<4x80xf32>
// CHECK: %[[G:.*]] = gpu.block_id x
// CHECK: %[[L:.*]] = gpu.thread_id x
// CHECK: %[[T:.*]] = arith.divui %[[G]], %c2
// CHECK: %[[S:.*]] = arith.remui %[[G]], %c2
// CHECK: %[[S64:.*]] = arith.muli %[[S]], %c64
// CHECK: %[[D:.*]] = arith.addi %[[S64]], %[[L]]
// CHECK: %[[IN:.*]] = arith.cmpi ult, %[[D]], %c80
// CHECK: scf.if %[[IN]]
// CHECK: memref.load %[[A]][%[[T]], %[[D]]]
// CHECK: memref.store %{{.*}}, %[[O]][%[[T]], %[[D]]]
// CHECK-NOT: scf.for
// CHECK: gpu.return
func.func @few_rows(%x: tensor<?x80xf32>, %y: tensor<?x80xf32>) -> tensor<?x80xf32> attributes {tlora.max_tokens = 4 : i64} {
  %s = arith.addf %x, %y : tensor<?x80xf32>
  return %s : tensor<?x80xf32>
}

// -----

// Longer rows: four elements per iteration (independent loads a GPU issues
// together), then the rest one at a time; the element order is unchanged.
// CHECK-LABEL: func.func @long_rows
// CHECK: gpu.func @add_d600_t16
// CHECK: %[[L:.*]] = gpu.thread_id x
// CHECK: scf.for %[[I:.*]] = %[[L]] to %c408{{.*}} step %c256
// CHECK-COUNT-4: arith.addf
// CHECK: }
// CHECK: scf.for %{{.*}} = %{{.*}} to %c600{{.*}} step %c64
// CHECK-COUNT-1: arith.addf
func.func @long_rows(%x: tensor<?x600xf32>, %y: tensor<?x600xf32>) -> tensor<?x600xf32> attributes {tlora.max_tokens = 16 : i64} {
  %s = arith.addf %x, %y : tensor<?x600xf32>
  return %s : tensor<?x600xf32>
}

// -----

// RMS norm: strided partial sums in workgroup memory, summed in a fixed
// order by invocation 0 (deterministic), between barriers. bf16 weights are
// read as 32-bit words (no 16-bit storage needed) and widened exactly.
// CHECK-LABEL: func.func @norm
// CHECK: gpu.func @rms_norm_d64_bf16_eps{{[0-9A-F]+}}_t16(%{{.*}}: memref<16x64xf32>, %{{.*}}: memref<32xi32>, %{{.*}}: memref<16x64xf32>
// An invocation without elements (64 > D is possible) takes the fold's
// initial value from a branch, never from a loop that ran zero times.
// CHECK: scf.if %{{.*}} -> (f32)
// CHECK: scf.for
// CHECK: } else {
// CHECK: memref.alloc() : memref<65xf32, 3>
// CHECK: gpu.barrier
// CHECK: scf.if
// CHECK: gpu.barrier
// CHECK: math.sqrt
// CHECK: arith.shli
// CHECK: arith.bitcast %{{.*}} : i32 to f32
func.func @norm(%x: tensor<?x64xf32>) -> tensor<?x64xf32> attributes {tlora.max_tokens = 16 : i64} {
  %w = tlora.weight "n" : tensor<64xbf16>
  %h = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x64xf32>, tensor<64xbf16> -> tensor<?x64xf32>
  return %h : tensor<?x64xf32>
}

// -----

// RMS norm for a few tokens: each of a row's ceil(80 / 64) = 2 workgroups
// sums the whole row, unrolled (all loads in flight; the partial last
// stride guarded), in the same order as above, then scales its 64-element
// slice.
// CHECK-LABEL: func.func @norm_decode
// CHECK: workload(2 * T + 0)
// CHECK: gpu.func @rms_norm_d80_f32_eps{{[0-9A-F]+}}_t1
// CHECK-NOT: scf.for
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: %[[IN:.*]] = arith.cmpi ult, %{{.*}}, %c80
// CHECK: scf.if %[[IN]] -> (f32)
// CHECK: gpu.barrier
// CHECK: math.sqrt
// CHECK: arith.remui
// CHECK: scf.if
// CHECK: memref.store
func.func @norm_decode(%x: tensor<?x80xf32>) -> tensor<?x80xf32> attributes {tlora.max_tokens = 1 : i64} {
  %w = tlora.weight "n" : tensor<80xf32>
  %h = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x80xf32>, tensor<80xf32> -> tensor<?x80xf32>
  return %h : tensor<?x80xf32>
}


// -----

// A decode step's ops and their workloads: quantize one workgroup per 64
// words of a token's row, rope one per token; the ternary product eight
// outputs per workgroup of 128, 16 invocations each (a short row keeps the
// fewest), whose int32 sums of sign-extended bytes times code - 1 meet in
// workgroup memory; attention one
// per (token, head); the LM head one per vocabulary row, for the rows wanted.
// CHECK-LABEL: func.func @decode
// CHECK: tlora.dispatch @kernels::@quantize_k64_t1({{.*}}) workload(1 * T + 0)
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n128_k64_t1({{.*}}) workload(16 * T + 0)
// CHECK: tlora.dispatch @kernels::@rope_d128_hd16_theta10000_t1({{.*}}) workload(1 * T + 0)
// CHECK: tlora.dispatch @kernels::@attention_s32_h8_kv8_hd16_t1({{.*}}) workload(8 * T + 0)
// CHECK: tlora.dispatch @kernels::@dense_n100_k128_f32_v16_t1({{.*}}) workload(0 * T + 100)
// CHECK: gpu.func @quantize_k64_t1
// CHECK: math.roundeven
// CHECK: gpu.func @ternary_matmul_n128_k64_t1
// CHECK: memref.alloc() : memref<128xi32, 3>
// CHECK: arith.shrsi
// CHECK: arith.muli
// CHECK: gpu.barrier
// CHECK-COUNT-15: arith.addi %{{.*}}, %{{.*}} : i32
// CHECK: arith.sitofp
// CHECK: gpu.barrier
// CHECK: gpu.func @rope_d128_hd16_theta10000_t1
// CHECK: math.roundeven
// Decode attention reads q and the keys 16 bytes per load, adding the
// head's products in order (d ascending).
// CHECK: gpu.func @attention_s32_h8_kv8_hd16_t1(%[[AQ:[^:]*]]: memref<32xvector<4xf32>>, %[[AK:[^:]*]]: memref<1024xvector<4xf32>>, %{{.*}}: memref<32x128xf32>
// CHECK: memref.alloc() : memref<32xf32, 3>
// CHECK: %[[Q4:.*]] = memref.load %[[AQ]]
// CHECK: %[[K4:.*]] = memref.load %[[AK]]
// CHECK: vector.extract %[[Q4]][0]
// CHECK: vector.extract %[[K4]][0]
// exp is the CPU kernels' (2^n from the exponent bits times a polynomial),
// not the device's looser one.
// CHECK-NOT: math.exp
// CHECK: arith.fptosi
// CHECK: arith.shli
// CHECK: arith.bitcast
// The LM head reads weights and activations 16 bytes per load; each
// invocation adds its vectors' four products in order.
// CHECK: gpu.func @dense_n100_k128_f32_v16_t1(%[[X:[^:]*]]: memref<32xvector<4xf32>>, %[[W:[^:]*]]: memref<3200xvector<4xf32>>
// CHECK: %[[WV:.*]] = memref.load %[[W]][%{{.*}}] : memref<3200xvector<4xf32>>
// CHECK-COUNT-4: vector.extract %[[WV]][{{[0-3]}}] : f32 from vector<4xf32>
// CHECK: %[[XV:.*]] = memref.load %[[X]][%{{.*}}] : memref<32xvector<4xf32>>
// CHECK: gpu.barrier
func.func @decode(%x: tensor<?x64xf32>, %pos: index, %rows: index) -> tensor<?x100xf32> attributes {tlora.max_tokens = 1 : i64} {
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 128, inFeatures = 64>
  %q = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %y = tlora.ternary_matmul %q, %w : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 128, inFeatures = 64> -> tensor<?x128xf32>
  %r = tlora.rope %y at %pos head_dim(16) theta(10000.0) : tensor<?x128xf32> -> tensor<?x128xf32>
  %kc = tlora.kv_cache "layers.0.keys" : !tlora.kv_cache<maxSeq = 32, kvHeads = 8, headDim = 16>
  %vc = tlora.kv_cache "layers.0.values" : !tlora.kv_cache<maxSeq = 32, kvHeads = 8, headDim = 16>
  %o = tlora.attention %r, %kc, %vc at %pos scale(0.25) : tensor<?x128xf32>, !tlora.kv_cache<maxSeq = 32, kvHeads = 8, headDim = 16> -> tensor<?x128xf32>
  %head = tlora.weight "head" : tensor<100x128xf32>
  %l = tlora.dense %o, %head rows(%rows) : tensor<?x128xf32>, tensor<100x128xf32> -> tensor<?x100xf32>
  return %l : tensor<?x100xf32>
}

// -----

// Training: a LoRA backward is two kernels (per-token rows, then the weight
// gradients summed over tokens in order: no atomics); accumulation adds into
// the gradient slot; the loss seed binds the whole hyper block (its
// loss_scale field, word 6, would be a misaligned binding); the optimizer is
// the gradient norm, then AdamW over the training state's sections
// (parameters, gradients, two moments: one binding each).
// CHECK-LABEL: func.func @train_step
// CHECK: %[[ROWS:.*]]:2 = tlora.dispatch @kernels::@lora_grad_rows_r4_k64_n32_s{{[0-9A-F]+}}_t8(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) workload(1 * T + 0) : {{.*}} -> (tensor<?x8xf32>, tensor<?x64xf32>)
// CHECK: tlora.dispatch @kernels::@lora_grad_weights_r4_k64_n32_s{{[0-9A-F]+}}_t8(%{{.*}}, %{{.*}}, %[[ROWS]]#0) workload(0 * T + 2)
// CHECK: %[[ACC:.*]] = tlora.trainable "a" {gradient}
// CHECK: tlora.dispatch @kernels::@accumulate_n256_t8(%{{.*}}, %[[ACC]]) workload(0 * T + 4)
// CHECK: %[[H:.*]] = tlora.hyper
// CHECK-NOT: tlora.loss_scale
// CHECK: tlora.dispatch @kernels::@mean_loss_grad_seed16_6_t8(%[[H]], %{{.*}}) workload(0 * T + 1)
// CHECK: %[[G:.*]] = tlora.train_state {first = 384 : i64} : tensor<384xf32>
// CHECK: %[[S:.*]] = tlora.dispatch @kernels::@grad_sq_sum_p384_g1_t8(%[[G]], %[[H]]) workload(0 * T + 1)
// CHECK: tlora.dispatch @kernels::@grad_norm_of1_in1_t8(%[[S]], %[[H]]) workload(0 * T + 1)
// CHECK: %[[P:.*]] = tlora.train_state : tensor<384xf32>
// CHECK: %[[G2:.*]] = tlora.train_state {first = 384 : i64} : tensor<384xf32>
// CHECK: %[[M:.*]] = tlora.train_state {first = 768 : i64} : tensor<384xf32>
// CHECK: %[[V:.*]] = tlora.train_state {first = 1152 : i64} : tensor<384xf32>
// CHECK: tlora.dispatch @kernels::@adamw_p384_t8(%[[P]], %[[G2]], %[[M]], %[[V]], %[[H]]) workload(0 * T + 6)
// CHECK: gpu.func @lora_grad_weights_r4_k64_n32_s{{[0-9A-F]+}}_t8(%{{.*}}: memref<8x64xf32>, %{{.*}}: memref<8x32xf32>, %{{.*}}: memref<8x8xf32>, %{{.*}}: memref<256xf32>, %{{.*}}: memref<128xf32>
func.func @train_step(%x: tensor<?x64xf32>, %dy: tensor<?x32xf32>, %labels: tensor<?xi32>) -> (tensor<?x64xf32>, tensor<?xf32>) attributes {tlora.max_tokens = 8 : i64, tlora.optimizer = #tlora.optimizer<adamw>, tlora.seq_len = 4 : i64} {
  %a = tlora.trainable "a" : tensor<4x64xf32>
  %b = tlora.trainable "b" : tensor<32x4xf32>
  %dx, %da, %db = tlora.lora_grad %x, %a, %b, %dy scaling(2.000000e+00) : (tensor<?x64xf32>, tensor<4x64xf32>, tensor<32x4xf32>, tensor<?x32xf32>) -> (tensor<?x64xf32>, tensor<4x64xf32>, tensor<32x4xf32>)
  tlora.accumulate_grad %da into "a" : tensor<4x64xf32>
  tlora.accumulate_grad %db into "b" : tensor<32x4xf32>
  %h = tlora.hyper : tensor<16xf32>
  %seed = tlora.loss_scale %h : tensor<16xf32> -> tensor<1xf32>
  %dl = tlora.mean_loss_grad %seed, %labels : (tensor<1xf32>, tensor<?xi32>) -> tensor<?xf32>
  tlora.optimizer_step <adamw>, %h : tensor<16xf32>
  return %dx, %dl : tensor<?x64xf32>, tensor<?xf32>
}

// -----

// 16+ tokens per call: the ternary product is tiled, a workgroup per 64 x 64
// outputs (here 2 x 3 tiles: 100 tokens at most, 132 outputs), k staged in
// workgroup memory (two 16 x 64 tiles), 8 x 8 f32 accumulators per
// invocation, stores guarded by T and the output count.
// CHECK-LABEL: func.func @prefill
// CHECK: tlora.dispatch @kernels::@ternary_matmul_tiled_n132_k64_t100({{.*}}) workload(0 * T + 6)
// CHECK: gpu.func @ternary_matmul_tiled_n132_k64_t100
// CHECK-COUNT-2: memref.alloc() : memref<1024xf32, 3>
// CHECK: scf.for {{.*}} iter_args
// CHECK-COUNT-2: gpu.barrier
// CHECK: math.fma
// CHECK: arith.cmpi ult, %{{.*}}, %c132
// With the integer dot product: the tiles are packed int8 words (16 words
// of a row per block of 64 inputs, rows 33 words apart), summed in i32 by
// the dot product, then scaled as f32; 6 tiles of 64 x 64 are too few
// workgroups, so the tiles are 32 x 32 (4 x 5 of them), 4 x 4 per
// invocation.
// DOT-LABEL: func.func @prefill
// DOT: tlora.dispatch @kernels::@ternary_matmul_tiled_n132_k64_dot32_t100({{.*}}) workload(0 * T + 20)
// DOT: gpu.func @ternary_matmul_tiled_n132_k64_dot32_t100
// DOT-COUNT-2: memref.alloc() : memref<528xi32, 3>
// DOT: scf.for {{.*}} iter_args
// DOT-COUNT-2: gpu.barrier
// DOT-COUNT-16: func.call @tlc_sdot4_i8
// DOT-NOT: math.fma
// DOT: arith.sitofp
// DOT: arith.cmpi ult, %{{.*}}, %c132
func.func @prefill(%x: tensor<?x64xf32>) -> tensor<?x132xf32> attributes {tlora.max_tokens = 100 : i64} {
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 132, inFeatures = 64>
  %q = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %y = tlora.ternary_matmul %q, %w : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 132, inFeatures = 64> -> tensor<?x132xf32>
  return %y : tensor<?x132xf32>
}

// -----

// Decode: the products of one quantized input (q, k, v) are one dispatch
// with a result each, their workgroup ranges laid end to end
// (ceil(64/8) + ceil(16/8) + ceil(16/8) = 12 a token); the kernel picks the
// weight per workgroup with a uniform branch. A product of another input
// stays its own dispatch, and so does one whose result is used before the
// last product of its input.
// CHECK-LABEL: func.func @fused_qkv
// CHECK: %[[QKV:.*]]:3 = tlora.dispatch @kernels::@ternary_matmul_n64_n16_n16_k64_t1(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) workload(12 * T + 0)
// CHECK: tlora.dispatch @kernels::@add_d16_t1(%[[QKV]]#1, %[[QKV]]#2)
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n32_k64_t1
// CHECK: tlora.dispatch @kernels::@add_d32_t1
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n32_k64_t1
// CHECK: gpu.func @ternary_matmul_n64_n16_n16_k64_t1(%{{.*}}: memref<5xvector<4xi32>>, %{{.*}}: memref<272xi32>, %{{.*}}: memref<80xi32>, %{{.*}}: memref<80xi32>, %{{.*}}: memref<1x64xf32>, %{{.*}}: memref<1x16xf32>, %{{.*}}: memref<1x16xf32>
// CHECK: arith.cmpi ult, %{{.*}}, %c8
// CHECK: scf.if
// CHECK: arith.cmpi ult, %{{.*}}, %c10
// CHECK: scf.if
func.func @fused_qkv(%x: tensor<?x64xf32>, %z: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x32xf32>, tensor<?x32xf32>) attributes {tlora.max_tokens = 1 : i64} {
  %wq = tlora.ternary_weight "q" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 64>
  %wk = tlora.ternary_weight "k" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 64>
  %wv = tlora.ternary_weight "v" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 16, inFeatures = 64>
  %wa = tlora.ternary_weight "a" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %wb = tlora.ternary_weight "b" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %qx = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %q = tlora.ternary_matmul %qx, %wq : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 64, inFeatures = 64> -> tensor<?x64xf32>
  %k = tlora.ternary_matmul %qx, %wk : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 16, inFeatures = 64> -> tensor<?x16xf32>
  %v = tlora.ternary_matmul %qx, %wv : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 16, inFeatures = 64> -> tensor<?x16xf32>
  %kv = arith.addf %k, %v : tensor<?x16xf32>
  %qz = tlora.quantize %z : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %a = tlora.ternary_matmul %qz, %wa : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  %a2 = arith.addf %a, %a : tensor<?x32xf32>
  %b = tlora.ternary_matmul %qz, %wb : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  return %q, %kv, %a2, %b : tensor<?x64xf32>, tensor<?x16xf32>, tensor<?x32xf32>, tensor<?x32xf32>
}

// -----

// Decode: an RMSNorm that only feeds a quantization is one dispatch that
// writes the quantized row, a workgroup of 256 invocations per token, each
// holding 16-byte vectors of the row (here 20: one each for the first 20
// invocations, so the loads and the store are guarded); an RMSNorm with
// another user stays its own kernel.
// CHECK-LABEL: func.func @norm_quantize
// CHECK: tlora.dispatch @kernels::@rms_norm_quantize_d80_f32_eps{{[0-9A-F]+}}_t1(%{{.*}}, %{{.*}}) workload(1 * T + 0) : (tensor<?x80xf32>, tensor<80xf32>) -> !tlora.qact<features = 80>
// CHECK: tlora.dispatch @kernels::@rms_norm_d80_f32_eps{{[0-9A-F]+}}_t1
// CHECK: tlora.dispatch @kernels::@quantize_k80_t1
// CHECK: gpu.func @rms_norm_quantize_d80_f32_eps{{[0-9A-F]+}}_t1(%[[X:[^:]*]]: memref<20xvector<4xf32>>, %[[W:[^:]*]]: memref<20xvector<4xf32>>, %[[Q:[^:]*]]: memref<21xi32>
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK: scf.if
// CHECK: memref.load %[[X]]
// CHECK: memref.load %[[W]]
// CHECK: gpu.barrier
// CHECK: math.sqrt
// CHECK: math.absf
// CHECK: gpu.barrier
// CHECK: math.roundeven
// CHECK: memref.store %{{.*}}, %[[Q]]
func.func @norm_quantize(%x: tensor<?x80xf32>) -> (!tlora.qact<features = 80>, !tlora.qact<features = 80>, tensor<?x80xf32>) attributes {tlora.max_tokens = 1 : i64} {
  %w = tlora.weight "n" : tensor<80xf32>
  %h = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x80xf32>, tensor<80xf32> -> tensor<?x80xf32>
  %q = tlora.quantize %h : tensor<?x80xf32> -> !tlora.qact<features = 80>
  %h2 = tlora.rms_norm %x, %w eps(1.0e-5) : tensor<?x80xf32>, tensor<80xf32> -> tensor<?x80xf32>
  %q2 = tlora.quantize %h2 : tensor<?x80xf32> -> !tlora.qact<features = 80>
  return %q, %q2, %h2 : !tlora.qact<features = 80>, !tlora.qact<features = 80>, tensor<?x80xf32>
}

// -----

// Decode epilogues: squared_relu_mul of a gate and an up product of one
// input is one dispatch (four outputs of each per workgroup: 32 / 4
// workgroups; gate in the first 64 invocations, up in the last 64, exact
// int32 sums, then max(gate, 0)^2 * up); the residual add after a product
// is the product's epilogue. A product whose input has another user keeps
// its add.
// CHECK-LABEL: func.func @epilogues
// CHECK: %[[H:.*]] = tlora.dispatch @kernels::@ternary_matmul_n32_n32_k64_squared_relu_mul_t1(%{{.*}}, %{{.*}}, %{{.*}}) workload(8 * T + 0) : {{.*}} -> tensor<?x32xf32>
// CHECK: %[[Y:.*]] = tlora.dispatch @kernels::@ternary_matmul_n64_k32_add_t1(%{{.*}}, %{{.*}}, %arg0) workload(8 * T + 0) : {{.*}} -> tensor<?x64xf32>
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n32_n64_k64_t1
// CHECK: tlora.dispatch @kernels::@add_d64_t1
// CHECK: gpu.func @ternary_matmul_n32_n32_k64_squared_relu_mul_t1(%{{.*}}: memref<5xvector<4xi32>>, %{{.*}}: memref<144xi32>, %{{.*}}: memref<144xi32>, %{{.*}}: memref<1x32xf32>
// CHECK: arith.cmpi ult, %{{.*}}, %c4
// CHECK: scf.if
// CHECK: gpu.barrier
// CHECK: arith.maximumf
// CHECK: arith.mulf
// CHECK: arith.mulf
// CHECK: gpu.func @ternary_matmul_n64_k32_add_t1(%{{.*}}: memref<3xvector<4xi32>>, %{{.*}}: memref<144xi32>, %[[R:.*]]: memref<1x64xf32>, %[[OUT:.*]]: memref<1x64xf32>
// CHECK: arith.sitofp
// CHECK: %[[X:.*]] = memref.load %[[R]]
// CHECK: %[[S:.*]] = arith.addf %[[X]], %{{.*}} : f32
// CHECK: memref.store %[[S]], %[[OUT]]
func.func @epilogues(%x: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x32xf32>) attributes {tlora.max_tokens = 1 : i64} {
  %wg = tlora.ternary_weight "gate" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %wu = tlora.ternary_weight "up" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %wd = tlora.ternary_weight "down" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 32>
  %qx = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %g = tlora.ternary_matmul %qx, %wg : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  %u = tlora.ternary_matmul %qx, %wu : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  %h = tlora.squared_relu_mul %g, %u : tensor<?x32xf32>
  %qh = tlora.quantize %h : tensor<?x32xf32> -> !tlora.qact<features = 32>
  %d = tlora.ternary_matmul %qh, %wd : !tlora.qact<features = 32>, !tlora.ternary<outFeatures = 64, inFeatures = 32> -> tensor<?x64xf32>
  %y = arith.addf %x, %d : tensor<?x64xf32>
  %qy = tlora.quantize %y : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %d2 = tlora.ternary_matmul %qy, %wg : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  %w2 = tlora.ternary_weight "o" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 64>
  %d3 = tlora.ternary_matmul %qy, %w2 : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 64, inFeatures = 64> -> tensor<?x64xf32>
  %y2 = arith.addf %y, %d3 : tensor<?x64xf32>
  return %y2, %d2 : tensor<?x64xf32>, tensor<?x32xf32>
}

// -----

// Decode: the query and key rotations and the two appends before an
// attention are one dispatch, a range of each token's workgroups per part
// (q: 128 / 2 / 64 = 1, k: 1, v: 1); the rotated keys are stored at row
// pos + t of the cache.
// CHECK-LABEL: func.func @attention_inputs
// CHECK: %[[Q:.*]] = tlora.dispatch @kernels::@attention_inputs_q128_kv32_s64_hd16_theta10000_t1(%arg0, %arg1, %[[KC:.*]], %[[VC:.*]], %arg2) workload(3 * T + 0) : {{.*}} -> tensor<?x128xf32>
// CHECK: tlora.dispatch @kernels::@attention_s64_h8_kv2_hd16_t1(%[[Q]], %[[KC]], %[[VC]])
// CHECK: gpu.func @attention_inputs_q128_kv32_s64_hd16_theta10000_t1(%{{.*}}: memref<1x128xf32>, %{{.*}}: memref<1x32xf32>, %[[KB:.*]]: memref<64x32xf32>, %{{.*}}: memref<64x32xf32>, %{{.*}}: memref<1x32xf32>, %{{.*}}: memref<1x128xf32>
// CHECK: arith.cmpi ult, %{{.*}}, %c1
// CHECK: scf.if
// CHECK: } else {
// CHECK: arith.cmpi ult, %{{.*}}, %c2
// CHECK: memref.store %{{.*}}, %[[KB]][%{{.*}}, %{{.*}}]
// CHECK: memref.store %{{.*}}, %[[KB]][%{{.*}}, %{{.*}}]
func.func @attention_inputs(%q: tensor<?x128xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>, %pos: index) -> tensor<?x128xf32> attributes {tlora.max_tokens = 1 : i64} {
  %qr = tlora.rope %q at %pos head_dim(16) theta(10000.0) : tensor<?x128xf32> -> tensor<?x128xf32>
  %kr = tlora.rope %k at %pos head_dim(16) theta(10000.0) : tensor<?x32xf32> -> tensor<?x32xf32>
  %kc = tlora.kv_cache "layers.0.keys" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  %vc = tlora.kv_cache "layers.0.values" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  tlora.kv_append %kr into %kc at %pos : tensor<?x32xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  tlora.kv_append %v into %vc at %pos : tensor<?x32xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  %o = tlora.attention %qr, %kc, %vc at %pos scale(0.25) : tensor<?x128xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16> -> tensor<?x128xf32>
  return %o : tensor<?x128xf32>
}

// -----

// Decode: when q, k and v are products of one quantized input used by
// nothing else, the rotations and appends are their kernel's epilogue: one
// dispatch (q: 128 / 8, k and v: 32 / 8 workgroups). The leaders of the
// first four slots rotate a pair (i, i + 8) and store the rotated q, or k at
// row pos + t of the cache; v goes to its cache as it is.
// CHECK-LABEL: func.func @attention_projections
// CHECK: %[[Q:.*]] = tlora.dispatch @kernels::@ternary_matmul_n128_n32_n32_k64_rope_hd16_theta10000_append_s64_t1(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[KC:.*]], %[[VC:.*]]) workload(24 * T + 0) : {{.*}} -> tensor<?x128xf32>
// CHECK-NOT: tlora.dispatch @kernels::@attention_inputs
// CHECK: tlora.dispatch @kernels::@attention_s64_h8_kv2_hd16_t1(%[[Q]], %[[KC]], %[[VC]])
// CHECK: gpu.func @ternary_matmul_n128_n32_n32_k64_rope_hd16_theta10000_append_s64_t1(%{{.*}}: memref<5xvector<4xi32>>, %{{.*}}: memref<528xi32>, %{{.*}}: memref<144xi32>, %{{.*}}: memref<144xi32>, %{{.*}}: memref<64x32xf32>, %{{.*}}: memref<64x32xf32>, %{{.*}}: memref<1x128xf32>
// CHECK: gpu.barrier
// CHECK: arith.subf
// CHECK: arith.addf
func.func @attention_projections(%x: tensor<?x64xf32>, %pos: index) -> tensor<?x128xf32> attributes {tlora.max_tokens = 1 : i64} {
  %wq = tlora.ternary_weight "q" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 128, inFeatures = 64>
  %wk = tlora.ternary_weight "k" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %wv = tlora.ternary_weight "v" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %qx = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %q = tlora.ternary_matmul %qx, %wq : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 128, inFeatures = 64> -> tensor<?x128xf32>
  %k = tlora.ternary_matmul %qx, %wk : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  %v = tlora.ternary_matmul %qx, %wv : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  %qr = tlora.rope %q at %pos head_dim(16) theta(10000.0) : tensor<?x128xf32> -> tensor<?x128xf32>
  %kr = tlora.rope %k at %pos head_dim(16) theta(10000.0) : tensor<?x32xf32> -> tensor<?x32xf32>
  %kc = tlora.kv_cache "layers.0.keys" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  %vc = tlora.kv_cache "layers.0.values" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  tlora.kv_append %kr into %kc at %pos : tensor<?x32xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  tlora.kv_append %v into %vc at %pos : tensor<?x32xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16>
  %o = tlora.attention %qr, %kc, %vc at %pos scale(0.25) : tensor<?x128xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 16> -> tensor<?x128xf32>
  return %o : tensor<?x128xf32>
}

// -----

// Decode products of longer rows spread each output over more invocations
// (productLanes: at least 4 code words each): 2048 inputs (128 words) 32
// invocations per output in workgroups of 128, 4096 inputs 64 in workgroups
// of 256, four outputs per workgroup either way. Each code word's 16
// activations are one 16-byte load.
// CHECK-LABEL: func.func @long_rows
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n64_k2048_t1({{.*}}) workload(16 * T + 0)
// CHECK: tlora.dispatch @kernels::@ternary_matmul_n64_k4096_t1({{.*}}) workload(16 * T + 0)
// CHECK: gpu.func @ternary_matmul_n64_k2048_t1(%[[Q:[^:]*]]: memref<129xvector<4xi32>>
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK: memref.load %[[Q]]{{.*}} : memref<129xvector<4xi32>>
// CHECK: gpu.func @ternary_matmul_n64_k4096_t1(%{{[^:]*}}: memref<257xvector<4xi32>>
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
func.func @long_rows(%x: tensor<?x2048xf32>, %z: tensor<?x4096xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) attributes {tlora.max_tokens = 1 : i64} {
  %w1 = tlora.ternary_weight "w1" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 2048>
  %w2 = tlora.ternary_weight "w2" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 64, inFeatures = 4096>
  %qx = tlora.quantize %x : tensor<?x2048xf32> -> !tlora.qact<features = 2048>
  %y1 = tlora.ternary_matmul %qx, %w1 : !tlora.qact<features = 2048>, !tlora.ternary<outFeatures = 64, inFeatures = 2048> -> tensor<?x64xf32>
  %qz = tlora.quantize %z : tensor<?x4096xf32> -> !tlora.qact<features = 4096>
  %y2 = tlora.ternary_matmul %qz, %w2 : !tlora.qact<features = 4096>, !tlora.ternary<outFeatures = 64, inFeatures = 4096> -> tensor<?x64xf32>
  return %y1, %y2 : tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// Prefill attention reads q and the keys 16 bytes per load in a loop over
// the head (d ascending, as decode's unrolled sums); heads of 64 or more
// add the weighted values kUnroll positions at a time, loads first.
// CHECK-LABEL: func.func @prefill_attention
// CHECK: gpu.func @attention_s64_h4_kv2_hd64_t32(%{{.*}}: memref<2048xvector<4xf32>>, %{{.*}}: memref<2048xvector<4xf32>>, %{{.*}}: memref<64x128xf32>
// CHECK: scf.for
// CHECK: memref.load %{{.*}} : memref<2048xvector<4xf32>>
// CHECK: memref.load %{{.*}} : memref<2048xvector<4xf32>>
// CHECK-COUNT-4: vector.extract
// CHECK: scf.for {{.*}} step %c8
// CHECK-COUNT-8: memref.load %{{.*}} : memref<64x128xf32>
func.func @prefill_attention(%q: tensor<?x256xf32>, %pos: index) -> tensor<?x256xf32> attributes {tlora.max_tokens = 32 : i64} {
  %kc = tlora.kv_cache "keys" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 64>
  %vc = tlora.kv_cache "values" : !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 64>
  %o = tlora.attention %q, %kc, %vc at %pos scale(0.125) : tensor<?x256xf32>, !tlora.kv_cache<maxSeq = 64, kvHeads = 2, headDim = 64> -> tensor<?x256xf32>
  return %o : tensor<?x256xf32>
}
