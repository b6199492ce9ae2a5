#!/usr/bin/env bash
# Decode against the memory-bandwidth bound, measured in pairs: streaming-read
# bandwidth (bench/kernels/bench_membw.c, best 2-thread variant) right before
# each decode run (tlc-run bench, tg128 from an empty cache). The host's
# bandwidth moves with its other tenants, so each pair is reported alone.
#   bench/decode_bound.sh MODULE.tlm WEIGHT_MB_PER_TOKEN [PAIRS=5]
set -eu
module=$1; mb=$2; pairs=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN:-$here/../build/bin}
clang-22 -O3 -march=native "$here/kernels/bench_membw.c" -lpthread -o /tmp/tlc_bench_membw
for i in $(seq "$pairs"); do
  bw=$(/tmp/tlc_bench_membw 1024 | grep -oE "2 thread\(s\):\s+[0-9.]+" | awk '{print $3}' | sort -n | tail -1)
  tok=$("$bin/tlc-run" bench "$module" --prompt-len 8 --gen-len 128 --threads 2 |
        python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tok_s'])")
  python3 -c "bw=$bw; t=$tok; b=bw*1e3/$mb; print('bandwidth %.1f GB/s  bound %.1f tok/s  decode %.1f tok/s  %.0f%% of bound' % (bw, b, t, 100*t/b))"
done
