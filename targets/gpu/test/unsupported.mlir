// RUN: not tlc-opt %s -tlc-gpu-form-dispatches 2>&1 | FileCheck %s

// An op without a GPU kernel is an error that names it: nothing falls back
// to the CPU silently.
// CHECK: error: 'tlora.lora' op has no GPU kernel yet
func.func @unsupported(%x: tensor<?x64xf32>) -> tensor<?x32xf32> attributes {tlora.max_tokens = 2 : i64} {
  %a = tlora.weight "a" : tensor<4x64xf32>
  %b = tlora.weight "b" : tensor<32x4xf32>
  %d = tlora.lora %x, %a, %b scaling(2.0) : tensor<?x64xf32>, tensor<4x64xf32>, tensor<32x4xf32> -> tensor<?x32xf32>
  return %d : tensor<?x32xf32>
}
