// MLIR source of the llvm-cpu kernels, one template per op kind. Kernels
// move from these templates to typed builders in FormDispatches.cpp (the
// elementwise add and the KV-cache append are built); what remains here is
// the next to move.
//
// Templates are MLIR (scf/memref/vector/math) with {{NAME}}-style holes that
// FormDispatches fills per shape. Every kernel takes its buffers (operands,
// then results) as static memrefs, then five index scalars: T (tokens in this
// call), pos (position of the first token), rows (logit rows wanted), and the
// [begin, end) range of the workload this thread runs. Heavy products call C
// microkernels (kernels/*.c) that are compiled to bitcode and linked in.
#ifndef TLC_TARGETS_LLVMCPU_KERNELTEMPLATES_H
#define TLC_TARGETS_LLVMCPU_KERNELTEMPLATES_H

namespace tlc::llvmcpu {

/// Helpers every kernel module holds once (the C microkernels' declarations
/// come from their compiled definitions: microkernelDeclarations()).
inline constexpr const char *kPreludeHelpers = R"mlir(
func.func private @ptr(%i: index) -> !llvm.ptr attributes {llvm.linkage = #llvm.linkage<internal>} {
  %a = arith.index_cast %i : index to i64
  %p = llvm.inttoptr %a : i64 to !llvm.ptr
  return %p : !llvm.ptr
}
func.func private @to_f32_bf16(%v: bf16) -> f32 attributes {llvm.linkage = #llvm.linkage<internal>} {
  %f = arith.extf %v : bf16 to f32
  return %f : f32
}
func.func private @to_f32_f32(%v: f32) -> f32 attributes {llvm.linkage = #llvm.linkage<internal>} {
  return %v : f32
}
)mlir";

#define TLC_KERNEL_SCALARS                                                     \
  "%T: index, %pos: index, %rows: index, %begin: index, %end: index"
inline constexpr const char *kKernelScalars = TLC_KERNEL_SCALARS;

inline constexpr const char *kEmbed = R"mlir(
func.func @{{NAME}}(%table: memref<{{V}}x{{D}}x{{W}}>, %ids: memref<{{TM}}xi32>,
    %out: memref<{{TM}}x{{D}}xf32>, )mlir" TLC_KERNEL_SCALARS
                                      R"mlir() attributes {tlora.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cD = arith.constant {{D}} : index
  scf.for %t = %begin to %end step %c1 {
    %id32 = memref.load %ids[%t] : memref<{{TM}}xi32>
    %id = arith.index_cast %id32 : i32 to index
    scf.for %d = %c0 to %cD step %c1 {
      %w = memref.load %table[%id, %d] : memref<{{V}}x{{D}}x{{W}}>
      %f = func.call @to_f32_{{W}}(%w) : ({{W}}) -> f32
      memref.store %f, %out[%t, %d] : memref<{{TM}}x{{D}}xf32>
    }
  }
  return
}
)mlir";

inline constexpr const char *kRMSNorm = R"mlir(
func.func @{{NAME}}(%x: memref<{{TM}}x{{D}}xf32>, %w: memref<{{D}}x{{W}}>,
    %out: memref<{{TM}}x{{D}}xf32>, )mlir" TLC_KERNEL_SCALARS
                                        R"mlir() attributes {tlora.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cD = arith.constant {{D}} : index
  %zero = arith.constant 0.0 : f32
  %n = arith.constant {{D}}.0 : f32
  %eps = arith.constant {{EPS}} : f32
  scf.for %t = %begin to %end step %c1 {
    %ss = scf.for %d = %c0 to %cD step %c1 iter_args(%acc = %zero) -> (f32) {
      %v = memref.load %x[%t, %d] : memref<{{TM}}x{{D}}xf32>
      %sq = arith.mulf %v, %v : f32
      %a = arith.addf %acc, %sq fastmath<reassoc> : f32
      scf.yield %a : f32
    }
    %mean = arith.divf %ss, %n : f32
    %ve = arith.addf %mean, %eps : f32
    %r = math.rsqrt %ve : f32
    scf.for %d = %c0 to %cD step %c1 {
      %v = memref.load %x[%t, %d] : memref<{{TM}}x{{D}}xf32>
      %wv = memref.load %w[%d] : memref<{{D}}x{{W}}>
      %wf = func.call @to_f32_{{W}}(%wv) : ({{W}}) -> f32
      %h = arith.mulf %v, %r : f32
      %o = arith.mulf %wf, %h : f32
      memref.store %o, %out[%t, %d] : memref<{{TM}}x{{D}}xf32>
    }
  }
  return
}
)mlir";

inline constexpr const char *kQuantize = R"mlir(
func.func @{{NAME}}(%x: memref<{{TM}}x{{K}}xf32>, %q: memref<{{QB}}xi8>,
    )mlir" TLC_KERNEL_SCALARS R"mlir() attributes {tlora.kernel} {
  %tm = arith.constant {{TM}} : index
  %k = arith.constant {{K}} : index
  %xi = memref.extract_aligned_pointer_as_index %x : memref<{{TM}}x{{K}}xf32> -> index
  %xp = func.call @ptr(%xi) : (index) -> !llvm.ptr
  %qi = memref.extract_aligned_pointer_as_index %q : memref<{{QB}}xi8> -> index
  %qp = func.call @ptr(%qi) : (index) -> !llvm.ptr
  func.call @tlc_k_quantize(%xp, %qp, %tm, %k, %begin, %end) : (!llvm.ptr, !llvm.ptr, index, index, index, index) -> ()
  return
}
)mlir";

inline constexpr const char *kTernaryMatmul = R"mlir(
func.func @{{NAME}}(%q: memref<{{QB}}xi8>, %w: memref<{{WB}}xi8>, %out: memref<{{TM}}x{{N}}xf32>,
    )mlir" TLC_KERNEL_SCALARS R"mlir() attributes {tlora.kernel} {
  %tm = arith.constant {{TM}} : index
  %k = arith.constant {{K}} : index
  %n = arith.constant {{N}} : index
  %qi = memref.extract_aligned_pointer_as_index %q : memref<{{QB}}xi8> -> index
  %qp = func.call @ptr(%qi) : (index) -> !llvm.ptr
  %wi = memref.extract_aligned_pointer_as_index %w : memref<{{WB}}xi8> -> index
  %wp = func.call @ptr(%wi) : (index) -> !llvm.ptr
  %oi = memref.extract_aligned_pointer_as_index %out : memref<{{TM}}x{{N}}xf32> -> index
  %op = func.call @ptr(%oi) : (index) -> !llvm.ptr
  func.call @tlc_k_ternary_matmul(%qp, %wp, %op, %tm, %k, %n, %T, %begin, %end) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, index, index, index, index, index, index) -> ()
  return
}
)mlir";

inline constexpr const char *kDense = R"mlir(
func.func @{{NAME}}(%x: memref<{{TM}}x{{K}}xf32>, %w: memref<{{N}}x{{K}}x{{WT}}>, %out: memref<{{TM}}x{{N}}xf32>,
    )mlir" TLC_KERNEL_SCALARS R"mlir() attributes {tlora.kernel} {
  %tm = arith.constant {{TM}} : index
  %k = arith.constant {{K}} : index
  %n = arith.constant {{N}} : index
  %xi = memref.extract_aligned_pointer_as_index %x : memref<{{TM}}x{{K}}xf32> -> index
  %xp = func.call @ptr(%xi) : (index) -> !llvm.ptr
  %wi = memref.extract_aligned_pointer_as_index %w : memref<{{N}}x{{K}}x{{WT}}> -> index
  %wp = func.call @ptr(%wi) : (index) -> !llvm.ptr
  %oi = memref.extract_aligned_pointer_as_index %out : memref<{{TM}}x{{N}}xf32> -> index
  %op = func.call @ptr(%oi) : (index) -> !llvm.ptr
  func.call @tlc_k_dense_{{W}}(%xp, %wp, %op, %tm, %k, %n, %T, %rows, %begin, %end) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, index, index, index, index, index, index, index) -> ()
  return
}
)mlir";

inline constexpr const char *kRope = R"mlir(
memref.global "private" constant @{{NAME}}_inv_freq : memref<{{HALF}}xf32> = dense<[{{INV_FREQ}}]>
func.func @{{NAME}}(%x: memref<{{TM}}x{{D}}xf32>, %out: memref<{{TM}}x{{D}}xf32>,
    )mlir" TLC_KERNEL_SCALARS R"mlir() attributes {tlora.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %chalf = arith.constant {{HALF}} : index
  %chd = arith.constant {{HD}} : index
  %cD = arith.constant {{D}} : index
  %inv = memref.get_global @{{NAME}}_inv_freq : memref<{{HALF}}xf32>
  %period = arith.constant {{PERIOD}} : index
  scf.for %t = %begin to %end step %c1 {
    %tp = arith.remui %t, %period : index
    %p = arith.addi %pos, %tp : index
    %pi = arith.index_cast %p : index to i64
    %pf = arith.sitofp %pi : i64 to f32
    scf.for %i = %c0 to %chalf step %c1 {
      %f = memref.load %inv[%i] : memref<{{HALF}}xf32>
      %ang = arith.mulf %pf, %f : f32
      %cos = math.cos %ang : f32
      %sin0 = math.sin %ang : f32
      %sign = arith.constant {{SIGN}} : f32
      %sin = arith.mulf %sin0, %sign : f32
      scf.for %h0 = %c0 to %cD step %chd {
        %i1 = arith.addi %h0, %i : index
        %i2 = arith.addi %i1, %chalf : index
        %x1 = memref.load %x[%t, %i1] : memref<{{TM}}x{{D}}xf32>
        %x2 = memref.load %x[%t, %i2] : memref<{{TM}}x{{D}}xf32>
        %a1 = arith.mulf %x1, %cos : f32
        %b1 = arith.mulf %x2, %sin : f32
        %o1 = arith.subf %a1, %b1 : f32
        %a2 = arith.mulf %x2, %cos : f32
        %b2 = arith.mulf %x1, %sin : f32
        %o2 = arith.addf %a2, %b2 : f32
        memref.store %o1, %out[%t, %i1] : memref<{{TM}}x{{D}}xf32>
        memref.store %o2, %out[%t, %i2] : memref<{{TM}}x{{D}}xf32>
      }
    }
  }
  return
}
)mlir";


// Attention is a C microkernel (tlc_k_attention); work items = PARTS per token.
inline constexpr const char *kAttention = R"mlir(
func.func @{{NAME}}(%q: memref<{{TM}}x{{DQ}}xf32>, %kc: memref<{{S}}x{{DKV}}xf32>,
    %vc: memref<{{S}}x{{DKV}}xf32>, %out: memref<{{TM}}x{{DQ}}xf32>,
    )mlir" TLC_KERNEL_SCALARS R"mlir() attributes {tlora.kernel} {
  %h = arith.constant {{H}} : index
  %kvh = arith.constant {{KVH}} : index
  %hd = arith.constant {{HD}} : index
  %scale = arith.constant {{SCALE}} : f32
  %qi = memref.extract_aligned_pointer_as_index %q : memref<{{TM}}x{{DQ}}xf32> -> index
  %qp = func.call @ptr(%qi) : (index) -> !llvm.ptr
  %ki = memref.extract_aligned_pointer_as_index %kc : memref<{{S}}x{{DKV}}xf32> -> index
  %kp = func.call @ptr(%ki) : (index) -> !llvm.ptr
  %vi = memref.extract_aligned_pointer_as_index %vc : memref<{{S}}x{{DKV}}xf32> -> index
  %vp = func.call @ptr(%vi) : (index) -> !llvm.ptr
  %oi = memref.extract_aligned_pointer_as_index %out : memref<{{TM}}x{{DQ}}xf32> -> index
  %op = func.call @ptr(%oi) : (index) -> !llvm.ptr
  %parts = arith.constant {{PARTS}} : index
  func.call @tlc_k_attention(%qp, %kp, %vp, %op, %h, %kvh, %parts, %hd, %scale, %pos, %begin, %end) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, index, index, index, index, f32, index, index, index) -> ()
  return
}
)mlir";

// A LoRA adapter's contribution, per token row (C microkernel tlc_k_lora_*).
inline constexpr const char *kLora = R"mlir(
func.func @{{NAME}}(%x: memref<{{TM}}x{{K}}xf32>, %a: memref<{{R}}x{{K}}x{{WT}}>,
    %b: memref<{{N}}x{{R}}x{{WT}}>, %out: memref<{{TM}}x{{N}}xf32>,
    )mlir" TLC_KERNEL_SCALARS R"mlir() attributes {tlora.kernel} {
  %tm = arith.constant {{TM}} : index
  %k = arith.constant {{K}} : index
  %n = arith.constant {{N}} : index
  %r = arith.constant {{R}} : index
  %scale = arith.constant {{SCALE}} : f32
  %xi = memref.extract_aligned_pointer_as_index %x : memref<{{TM}}x{{K}}xf32> -> index
  %xp = func.call @ptr(%xi) : (index) -> !llvm.ptr
  %ai = memref.extract_aligned_pointer_as_index %a : memref<{{R}}x{{K}}x{{WT}}> -> index
  %ap = func.call @ptr(%ai) : (index) -> !llvm.ptr
  %bi = memref.extract_aligned_pointer_as_index %b : memref<{{N}}x{{R}}x{{WT}}> -> index
  %bp = func.call @ptr(%bi) : (index) -> !llvm.ptr
  %oi = memref.extract_aligned_pointer_as_index %out : memref<{{TM}}x{{N}}xf32> -> index
  %op = func.call @ptr(%oi) : (index) -> !llvm.ptr
  func.call @tlc_k_lora_{{W}}(%xp, %ap, %bp, %op, %k, %n, %r, %tm, %scale, %begin, %end) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, index, index, index, index, f32, index, index) -> ()
  return
}
)mlir";

inline constexpr const char *kSquaredReluMul =
    R"mlir(
func.func @{{NAME}}(%g: memref<{{TM}}x{{D}}xf32>, %u: memref<{{TM}}x{{D}}xf32>,
    %out: memref<{{TM}}x{{D}}xf32>, )mlir" TLC_KERNEL_SCALARS
    R"mlir() attributes {tlora.kernel} {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cD = arith.constant {{D}} : index
  %zero = arith.constant 0.0 : f32
  scf.for %t = %begin to %end step %c1 {
    scf.for %d = %c0 to %cD step %c1 {
      %gv = memref.load %g[%t, %d] : memref<{{TM}}x{{D}}xf32>
      %uv = memref.load %u[%t, %d] : memref<{{TM}}x{{D}}xf32>
      %r = arith.maximumf %gv, %zero : f32
      %r2 = arith.mulf %r, %r : f32
      %o = arith.mulf %r2, %uv : f32
      memref.store %o, %out[%t, %d] : memref<{{TM}}x{{D}}xf32>
    }
  }
  return
}
)mlir";


#undef TLC_KERNEL_SCALARS

} // namespace tlc::llvmcpu

#endif // TLC_TARGETS_LLVMCPU_KERNELTEMPLATES_H
