// RUN: tlc-opt %s -tlora-plan-memory | FileCheck %s

// Capacity 4 tokens: each [?x16xf32] value needs 256 bytes. %a dies after
// its last use, so %c reuses its range; %b stays live until the end.
// CHECK-LABEL: func.func @plan
// CHECK-SAME: tlora.arena_size = 512
// CHECK: @kernels::@k1{{.*}}bindings = [#tlora.slot<space = "input", offset = 0, size = 16>, #tlora.slot<space = "arena", offset = 0, size = 256>]
// CHECK: @kernels::@k2{{.*}}bindings = [#tlora.slot<space = "arena", offset = 0, size = 256>, #tlora.slot<space = "arena", offset = 256, size = 256>]
// CHECK: @kernels::@k3{{.*}}bindings = [#tlora.slot<space = "arena", offset = 256, size = 256>, #tlora.slot<space = "param", offset = 0, size = 64, name = "w">, #tlora.slot<space = "arena", offset = 0, size = 256>]
// CHECK: @kernels::@k4{{.*}}bindings = [#tlora.slot<space = "arena", offset = 0, size = 256>, #tlora.slot<space = "arena", offset = 256, size = 256>, #tlora.slot<space = "output", offset = 0, size = 256>]
func.func @plan(%ids: tensor<?xi32>) -> tensor<?x16xf32> attributes {tlora.max_tokens = 4 : i64} {
  %w = tlora.weight "w" : tensor<16xf32>
  %a = tlora.dispatch @kernels::@k1(%ids) workload(1 * T + 0) : (tensor<?xi32>) -> tensor<?x16xf32>
  %b = tlora.dispatch @kernels::@k2(%a) workload(1 * T + 0) : (tensor<?x16xf32>) -> tensor<?x16xf32>
  %c = tlora.dispatch @kernels::@k3(%b, %w) workload(1 * T + 0) : (tensor<?x16xf32>, tensor<16xf32>) -> tensor<?x16xf32>
  %d = tlora.dispatch @kernels::@k4(%c, %b) workload(1 * T + 0) : (tensor<?x16xf32>, tensor<?x16xf32>) -> tensor<?x16xf32>
  return %d : tensor<?x16xf32>
}
