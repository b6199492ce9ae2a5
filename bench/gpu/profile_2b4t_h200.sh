#!/bin/sh
# Per-kernel GPU time (TLC_PROFILE=1: each Vulkan dispatch's wall time) of
# the 2B-4T-shaped module from vulkan_2b4t_h200.sh prepare, for a prefill of
# 512 tokens and for 24 more decode steps. There: profile_2b4t_h200.sh $OUT
# (carry as vulkan_2b4t_h200.sh run).
set -eu
cd "$(dirname "$0")/../.."
out=${1:-.}
for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$PWD/build/lib"
gunzip -c .device/2b4t/train1.tlm.gz > /tmp/train1.tlm
{
  # The difference of the two is 24 decode steps at positions 512-535.
  for gen in 1 25; do
    echo "== prompt 512, $gen generated"
    TLC_PROFILE=1 timeout 150 build/bin/tlc-run bench /tmp/train1.tlm --device gpu \
      --prompt-len 512 --gen-len $gen 2>&1 | sort -k1,1 -rn | head -24
  done
} 2>&1 | tee "$out/profile.txt"
