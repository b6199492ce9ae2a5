#!/bin/sh
# Per-kernel GPU time (TLC_PROFILE=1: timestamps around each Vulkan
# dispatch) of the 2B-4T-shaped modules from vulkan_2b4t_h200.sh prepare:
# inference (prefill 512, then 24 more decode steps) and one training step
# at 1 x 512. There: profile_2b4t_h200.sh $OUT (carry as vulkan_2b4t_h200.sh
# run).
set -eu
cd "$(dirname "$0")/../.."
out=${1:-.}
for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$PWD/build/lib"
for f in .device/2b4t/infer*.tlm.xz .device/2b4t/train1.tlm.xz; do
  m=$(basename "$f" .tlm.xz)
  [ -f /tmp/$m.tlm ] || [ ! -f "$f" ] || bench/gpu/unxz.py "$f" /tmp/$m.tlm
done
{
  # The difference of the two is 24 decode steps at positions 512-535.
  for f in .device/2b4t/infer*.tlm.xz; do
    m=$(basename "$f" .tlm.xz)
    [ -f /tmp/$m.tlm ] || continue
    for gen in 1 25; do
      echo "== $m, prompt 512, $gen generated"
      TLC_PROFILE=1 timeout 150 build/bin/tlc-run bench /tmp/$m.tlm --device gpu \
        --prompt-len 512 --gen-len $gen > /tmp/profile.log 2>&1 || true
      grep -E "host:|decode_tok_s" /tmp/profile.log || true
      sort -k1,1 -rn /tmp/profile.log | head -24
    done
  done
  [ -f /tmp/train1.tlm ] || exit 0
  echo "== one training step, 1 x 512"
  TLC_PROFILE=1 timeout 150 build/bin/tlc-run train /tmp/train1.tlm --device gpu \
    --data demo/licenses.txt --steps 1 --lr 1e-4 --seed 1 --out /tmp/profile-adapter \
    2>&1 | sort -k1,1 -rn | head -30
} 2>&1 | tee "$out/profile.txt"
