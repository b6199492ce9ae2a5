// RUN: not tlc-opt %s -split-input-file -tlc-gpu-form-dispatches 2>&1 | FileCheck %s

// An op without a GPU kernel is an error that names it: nothing falls back
// to the CPU silently. (ternary_linear is decomposed before kernels form.)
// CHECK: error: 'tlora.ternary_linear' op has no GPU kernel yet
func.func @unsupported(%x: tensor<?x16xf32>) -> tensor<?x8xf32> attributes {tlora.max_tokens = 2 : i64} {
  %w = tlora.ternary_weight "a" scale(1.0) source(packed) : !tlora.ternary<outFeatures = 8, inFeatures = 16>
  %y = tlora.ternary_linear %x, %w : tensor<?x16xf32>, !tlora.ternary<outFeatures = 8, inFeatures = 16> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

// A kernel the shapes do not allow is one error naming the op: causal
// attention keeps two rows of scores in Vulkan's guaranteed 16 KiB of
// workgroup memory.
// CHECK: error: 'tlora.causal_attention' op the GPU kernel keeps 2 row(s) of scores in 16 KiB of workgroup memory: seq_len at most 2015, got 3000
func.func @long(%q: tensor<?x32xf32>, %k: tensor<?x32xf32>, %v: tensor<?x32xf32>) -> tensor<?x32xf32> attributes {tlora.max_tokens = 3000 : i64} {
  %o, %lse = tlora.causal_attention %q, %k, %v head_dim(16) seq_len(3000) scale(2.500000e-01) : tensor<?x32xf32>, tensor<?x32xf32> -> tensor<?x32xf32>, tensor<?x2xf32>
  return %o : tensor<?x32xf32>
}
