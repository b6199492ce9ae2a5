#!/usr/bin/env bash
# Rerun the peer-engine side of the CPU benchmark (see bench/peers.md for how the binaries
# and GGUF files were built). This script fetches and builds NOTHING: it only runs
# already-built llama-bench binaries on already-made GGUF files.
#
# usage: bench/run_peers.sh NAME=LLAMA_BENCH:MODEL.gguf [NAME=LLAMA_BENCH:MODEL.gguf ...]
#   e.g. bench/run_peers.sh \
#          ik_llama_iq2_bn=/work/peers/ik_llama.cpp/build/bin/llama-bench:/work/peers/models/ik-bitnet25-iq2_bn-q6k.gguf \
#          llamacpp_tq2_0=/work/peers/qvac-fabric-llm.cpp/build/bin/llama-bench:/work/peers/models/qvac-bitnet-tq2_0.gguf \
#          bitnetcpp_i2_s=/work/peers/BitNet/build/bin/llama-bench:/work/peers/models/bitnet25-i2_s.gguf
# env: THREADS (default 2), REPS (default 3), PP (512), TG (128),
#      EXTRA_ARGS (extra llama-bench flags for every peer, default none),
#      MAX_LOAD (default 0.6: wait, up to WAIT_S=600 s, until the 1-minute load average is below it)
set -u
THREADS=${THREADS:-2}; REPS=${REPS:-3}; PP=${PP:-512}; TG=${TG:-128}
EXTRA_ARGS=${EXTRA_ARGS:-}; MAX_LOAD=${MAX_LOAD:-0.6}; WAIT_S=${WAIT_S:-600}

if [ $# -eq 0 ]; then sed -n '2,16p' "$0"; exit 2; fi

load1() { cut -d' ' -f1 /proc/loadavg; }
wait_quiet() {
  local t=0
  while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN{exit !(l>=m)}'; do
    [ "$t" -ge "$WAIT_S" ] && { echo "# warning: load still $(load1) after ${WAIT_S}s, measuring anyway"; return; }
    sleep 10; t=$((t+10))
  done
}

summary=()
rc=0
for spec in "$@"; do
  name=${spec%%=*}; rest=${spec#*=}
  bin=${rest%%:*}; model=${rest#*:}
  if [ ! -x "$bin" ] || [ ! -f "$model" ]; then
    echo "# $name: missing binary ($bin) or model ($model), skipped"; rc=1; continue
  fi
  wait_quiet
  echo "## $name"
  echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) model: $model ($(stat -c %s "$model") bytes)"
  echo "# $bin -m $model -p $PP -n $TG -t $THREADS -r $REPS $EXTRA_ARGS"
  out=$("$bin" -m "$model" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" $EXTRA_ARGS 2>/dev/null)
  st=$?
  echo "$out"
  [ $st -ne 0 ] && { echo "# $name: llama-bench exited $st"; rc=1; }
  # pull the tok/s column (last column of the markdown table) for pp and tg rows
  pp=$(echo "$out" | awk -F'|' -v t="pp$PP" '$0 ~ t {gsub(/^ +| +$/,"",$(NF-1)); print $(NF-1); exit}')
  tg=$(echo "$out" | awk -F'|' -v t="tg$TG" '$0 ~ t {gsub(/^ +| +$/,"",$(NF-1)); print $(NF-1); exit}')
  summary+=("$(printf '%-20s pp%s: %-18s tg%s: %-18s load_after: %s' "$name" "$PP" "${pp:-?}" "$TG" "${tg:-?}" "$(load1)")")
  echo
done
echo "## summary (tok/s, mean ± std over $REPS reps, $THREADS threads)"
printf '%s\n' "${summary[@]}"
exit $rc
