#!/bin/sh
# Kernel experiments on the H200: for every module DIR/*.tlm.xz (variants
# of one small model, built here with different kernel choices), decode
# tok/s and the per-kernel decode GPU time (TLC_PROFILE=1; the slowest 16
# kernels of prompt 512 + 64 generated). There:
#   profile_variants_h200.sh DIR $OUT
# (carry build/bin/tlc-run, build/lib, .device/debs and DIR).
set -eu
cd "$(dirname "$0")/../.."
dir=$1 out=${2:-.}
for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$PWD/build/lib"
tmp=${TMPDIR:-/tmp}/tlc-variants
mkdir -p "$tmp"
{
  for f in "$dir"/*.tlm.xz; do
    m=$(basename "$f" .tlm.xz)
    bench/gpu/unxz.py "$f" "$tmp/$m.tlm"
    echo "== $m"
    for i in 1 2; do
      timeout 100 build/bin/tlc-run bench "$tmp/$m.tlm" --device gpu \
        --prompt-len 512 --gen-len 128 || echo "exit status $?"
    done
    TLC_PROFILE=1 timeout 100 build/bin/tlc-run bench "$tmp/$m.tlm" --device gpu \
      --prompt-len 512 --gen-len 64 2>&1 | grep '_t1\b\|_t1$' | sort -k1,1 -rn | head -16
  done
} 2>&1 | tee "$out/variants.txt"
