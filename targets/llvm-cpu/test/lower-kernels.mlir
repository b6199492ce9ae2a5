// RUN: tlc-opt %s -tlc-llvmcpu-form-dispatches -tlc-llvmcpu-lower-kernels | FileCheck %s

// Kernels end in the LLVM dialect with bare-pointer buffer arguments and the
// five index scalars (T, pos, rows, begin, end); the host function keeps its
// dispatches.
// CHECK-LABEL: func.func @decode
// CHECK: tlora.dispatch @kernels::@squared_relu_mul_d16_t1
// CHECK: module @kernels
// CHECK: llvm.func @squared_relu_mul_d16_t1(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64, %{{.*}}: i64)
// CHECK-NOT: scf.for
// CHECK-NOT: memref.load
// A microkernel call becomes a plain call with the buffers' base pointers.
// CHECK: llvm.func @quantize_k32_t2(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr,
// CHECK-NOT: tlora.microkernel_call
// CHECK: llvm.call @tlc_k_quantize(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) : (!llvm.ptr, !llvm.ptr, i64, i64, i64, i64) -> ()
func.func @decode(%g: tensor<?x16xf32>, %u: tensor<?x16xf32>) -> tensor<?x16xf32> attributes {tlora.max_tokens = 1 : i64} {
  %m = tlora.squared_relu_mul %g, %u : tensor<?x16xf32>
  return %m : tensor<?x16xf32>
}

func.func @quantize(%x: tensor<?x32xf32>) -> !tlora.qact<features = 32> attributes {tlora.max_tokens = 2 : i64} {
  %q = tlora.quantize %x : tensor<?x32xf32> -> !tlora.qact<features = 32>
  return %q : !tlora.qact<features = 32>
}
