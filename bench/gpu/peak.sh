# Sourced by the GPU bench scripts: `peak CMD...` runs CMD and prints the
# GPU's peak memory use meanwhile (nvidia-smi every 100 ms into $tmp/mem).
peak() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$tmp/mem" &
  smi=$!
  "$@" || echo "exit status $?"
  kill $smi
  echo "peak device memory $(sort -n "$tmp/mem" | tail -1) MiB"
}
