// RUN: tlc-opt %s -canonicalize | FileCheck %s

// An adapter scaled by zero adds nothing.
// CHECK-LABEL: func.func @zero_lora
// CHECK-NOT: tlora.lora
// CHECK-NOT: arith.addf
// CHECK: return %arg1
func.func @zero_lora(%x: tensor<?x16xf32>, %base: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %a = tlora.weight "a" : tensor<4x16xf32>
  %b = tlora.weight "b" : tensor<8x4xf32>
  %d = tlora.lora %x, %a, %b scaling(0.0) : tensor<?x16xf32>, tensor<4x16xf32>, tensor<8x4xf32> -> tensor<?x8xf32>
  %y = arith.addf %base, %d : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// A live adapter stays.
// CHECK-LABEL: func.func @live_lora
// CHECK: tlora.lora
// CHECK: arith.addf
func.func @live_lora(%x: tensor<?x16xf32>, %base: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %a = tlora.weight "a" : tensor<4x16xf32>
  %b = tlora.weight "b" : tensor<8x4xf32>
  %d = tlora.lora %x, %a, %b scaling(2.0) : tensor<?x16xf32>, tensor<4x16xf32>, tensor<8x4xf32> -> tensor<?x8xf32>
  %y = arith.addf %base, %d : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}
