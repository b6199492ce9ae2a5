// RUN: tlc-opt %s -tlc-gpu-form-dispatches -tlc-vulkan-lower-to-spirv > %t.mlir
// RUN: FileCheck %s < %t.mlir
// RUN: not grep -E "spirv.F(Add|Sub|Mul|Div) [^{]*: f32" %t.mlir
// The SPIR-V module passes spirv-val for Vulkan 1.1.
// RUN: sed -n '/^  spirv.module/,/^  }$/p' %t.mlir > %t.spv.mlir
// RUN: mlir-translate --no-implicit-module --serialize-spirv %t.spv.mlir -o %t.spv
// RUN: spirv-val --target-env vulkan1.1 %t.spv

// Buffers are storage buffers at (set 0, binding i) in argument order; the
// scalars T, pos, rows are one push-constant block (no set, no binding);
// 64 invocations per workgroup; the gpu.module is gone.
// CHECK-NOT: gpu.module
// CHECK: func.func @prefill
// CHECK: tlora.dispatch @kernels::@embed_v100_d64_bf16_t8
// CHECK: spirv.module @__spv__kernels Logical GLSL450
// CHECK-DAG: spirv.GlobalVariable @embed_v100_d64_bf16_t8_arg_0 bind(0, 0) : !spirv.ptr<!spirv.struct<(!spirv.array<3200 x i32, stride=4> [0])>, StorageBuffer>
// CHECK-DAG: spirv.GlobalVariable @embed_v100_d64_bf16_t8_arg_2 bind(0, 2) : !spirv.ptr<!spirv.struct<(!spirv.array<512 x f32, stride=4> [0])>, StorageBuffer>
// CHECK-DAG: spirv.GlobalVariable @embed_v100_d64_bf16_t8_arg_3 : !spirv.ptr<!spirv.struct<(!spirv.array<4 x i32, stride=4> [0])>, PushConstant>
// CHECK-DAG: spirv.GlobalVariable @{{.*}} : !spirv.ptr<!spirv.struct<(!spirv.array<65 x f32>)>, Workgroup>
// CHECK-DAG: spirv.EntryPoint "GLCompute" @rms_norm_d64_f32_eps{{[0-9A-F]+}}_t8
// CHECK-DAG: spirv.ExecutionMode @add_d64_t8 "LocalSize", 64, 1, 1
// CHECK-DAG: spirv.ExecutionMode @kv_append_s16_d64_t8 "LocalSize", 64, 1, 1
// Float arithmetic is decorated NoContraction (evaluated as written on
// every driver); no float op goes without it.
// CHECK-DAG: spirv.FAdd {{.*}} {no_contraction} : f32
// CHECK-DAG: spirv.FMul {{.*}} {no_contraction} : f32
// // CHECK-NOT: gpu.module
func.func @prefill(%ids: tensor<?xi32>, %pos: index) -> tensor<?x64xf32> attributes {tlora.max_tokens = 8 : i64} {
  %table = tlora.weight "emb" : tensor<100x64xbf16>
  %x = tlora.embed %table[%ids] : tensor<100x64xbf16>, tensor<?xi32> -> tensor<?x64xf32>
  %nw = tlora.weight "n" : tensor<64xf32>
  %h = tlora.rms_norm %x, %nw eps(1.0e-5) : tensor<?x64xf32>, tensor<64xf32> -> tensor<?x64xf32>
  %kc = tlora.kv_cache "layers.0.keys" : !tlora.kv_cache<maxSeq = 16, kvHeads = 4, headDim = 16>
  tlora.kv_append %h into %kc at %pos : tensor<?x64xf32>, !tlora.kv_cache<maxSeq = 16, kvHeads = 4, headDim = 16>
  %m = tlora.squared_relu_mul %h, %x : tensor<?x64xf32>
  %s = arith.addf %m, %x : tensor<?x64xf32>
  return %s : tensor<?x64xf32>
}
