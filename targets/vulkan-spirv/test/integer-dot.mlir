// RUN: tlc-opt %s -tlc-gpu-form-dispatches=integer-dot=true | FileCheck %s --check-prefix=FORM
// RUN: tlc-opt %s -tlc-gpu-form-dispatches=integer-dot=true -tlc-vulkan-lower-to-spirv > %t.mlir
// RUN: FileCheck %s < %t.mlir
// The SPIR-V module passes spirv-val for Vulkan 1.3.
// RUN: sed -n '/^  spirv.module/,/^  }$/p' %t.mlir > %t.spv.mlir
// RUN: mlir-translate --no-implicit-module --serialize-spirv %t.spv.mlir -o %t.spv
// RUN: spirv-val --target-env vulkan1.3 %t.spv

// With integer-dot, a decode ternary product takes four weights per call of
// the kernels' dot product: codes (word >> 2a) & 0x03030303 (50529027),
// plus 0x7F per byte (2139062143), top bits flipped (0x80808080 =
// -2139062144): bytes -1, 0, 1 against four packed int8 activations.
// FORM: gpu.module @kernels
// FORM: func.func private @tlc_sdot4_i8(i32, i32) -> i32
// FORM: gpu.func @ternary_matmul_n32_k64_t1
// FORM: arith.constant 50529027 : i32
// FORM: arith.constant 2139062143 : i32
// FORM: arith.constant -2139062144 : i32
// FORM: func.call @tlc_sdot4_i8(%{{.*}}, %{{.*}}) : (i32, i32) -> i32
// FORM-NOT: arith.shrsi

// The backend lowers the calls to OpSDot on packed 4 x 8-bit vectors and
// declares SPIR-V 1.6 with the dot product's capabilities.
// CHECK-NOT: tlc_sdot4_i8
// CHECK: spirv.module @__spv__kernels Logical GLSL450 requires #spirv.vce<v1.6, [Shader, DotProduct, DotProductInput4x8BitPacked
// CHECK: spirv.SDot %{{.*}}, %{{.*}}, <PackedVectorFormat4x8Bit> : i32 -> i32
func.func @decode(%x: tensor<?x64xf32>) -> tensor<?x32xf32> attributes {tlora.max_tokens = 1 : i64} {
  %w = tlora.ternary_weight "w" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 32, inFeatures = 64>
  %q = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  %y = tlora.ternary_matmul %q, %w : !tlora.qact<features = 64>, !tlora.ternary<outFeatures = 32, inFeatures = 64> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
