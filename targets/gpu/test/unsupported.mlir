// RUN: not tlc-opt %s -tlc-gpu-form-dispatches 2>&1 | FileCheck %s

// An op without a GPU kernel is an error that names it: nothing falls back
// to the CPU silently. (Training ops are next.)
// CHECK: error: 'tlora.mean_loss' op has no GPU kernel yet
func.func @unsupported(%loss: tensor<?xf32>, %labels: tensor<?xi32>) -> tensor<1xf32> attributes {tlora.max_tokens = 2 : i64} {
  %m = tlora.mean_loss %loss, %labels : (tensor<?xf32>, tensor<?xi32>) -> tensor<1xf32>
  return %m : tensor<1xf32>
}
