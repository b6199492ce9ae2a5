// RUN: not tlc-opt %s -tlc-gpu-form-dispatches 2>&1 | FileCheck %s

// An op without a GPU kernel is an error that names it: nothing falls back
// to the CPU silently.
// CHECK: error: 'tlora.quantize' op has no GPU kernel yet
func.func @unsupported(%x: tensor<?x64xf32>) -> !tlora.qact<features = 64> attributes {tlora.max_tokens = 2 : i64} {
  %q = tlora.quantize %x : tensor<?x64xf32> -> !tlora.qact<features = 64>
  return %q : !tlora.qact<features = 64>
}
