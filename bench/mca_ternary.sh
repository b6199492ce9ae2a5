#!/bin/sh
# Cycles per 64-byte weight chunk (256 ternary weights, one activation row)
# of the AArch64 GEMV inner step, plain NEON vs SDOT build, from LLVM 22's
# scheduling models of phone cores (bench/kernels/mca_ternary_neon.c).
# Static estimates: no memory stalls; the GEMV is bandwidth-bound on phones.
set -eu
cd "$(dirname "$0")/.."
printf "%-12s %14s %14s\n" cpu "neon cyc/chunk" "sdot cyc/chunk"
for cpu in oryon-1 cortex-x4 cortex-a720 cortex-a76 apple-a18 cortex-a55; do
  row="$cpu"
  for isa in armv8-a armv8.2-a+dotprod; do
    cycles=$(clang-22 --target=aarch64-linux-gnu -O3 -march=$isa -mcpu=$cpu -S \
        -I targets/llvm-cpu/kernels bench/kernels/mca_ternary_neon.c -o - |
      llvm-mca-22 -mtriple=aarch64 -mcpu=$cpu -mattr=+dotprod -iterations=200 2>/dev/null |
      awk '/Total Cycles/ {printf "%.1f", $3 / 200}') || true
    row="$row ${cycles:-n/a}"
  done
  printf "%-12s %14s %14s\n" $row
done
