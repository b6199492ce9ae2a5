#!/bin/sh
# The golden checks of test/e2e/vulkan.test on a real GPU through its Vulkan
# driver (the H200 machine: NVIDIA's driver is installed, the Vulkan loader
# is not). Prepare here, then run there with the `device` tool:
#
#   here:  bench/gpu/vulkan_goldens_h200.sh prepare
#   there: bench/gpu/vulkan_goldens_h200.sh run $OUT
#          (carry build/bin/tlc-run build/bin/vulkan_test build/lib/libtlcrt.so
#           build/lib/libtlctrain.so .device)
set -eu
cd "$(dirname "$0")/../.."
case "${1:-}" in
prepare)
  mkdir -p .device/debs .device/modules
  (cd .device/debs && apt-get download libvulkan1 libegl1 libglvnd0)
  python3 test/e2e/run_goldens.py --bin build/bin --target vulkan-spirv \
    --compile-to .device/modules
  mkdir -p .device/lora
  for case in gqa-autobitlinear-tied gqa-online-master-headdim mha-noquant-bf16-sharded; do
    build/bin/tlc compile test/e2e/goldens/$case --target vulkan-spirv \
      --adapter test/e2e/lora-goldens/$case/adapter -o .device/lora/$case.tlm
  done
  # Training: PEFT gradient cases, a resume module, and the docs model
  # (both executables) for a GPU-vs-CPU look at training speed.
  python3 test/e2e/check_lora_grads.py --bin build/bin \
    --compile-flag=--target=vulkan-spirv --save-modules .device/train
  build/bin/tlc compile test/e2e/goldens/gqa-autobitlinear-tied \
    --target vulkan-spirv --train --lora-rank 4 --lora-alpha 8 --seq-len 12 \
    --batch 2 -o .device/train/resume.tlm
  python3 -c "import numpy as np; np.save('.device/train/resume.npy', np.random.default_rng(5).integers(0, 512, size=(40, 12)).astype(np.int32))"
  build/bin/tlc compile models/tiny-bitnet-docs --target x86-64,vulkan-spirv \
    --train --lora-rank 8 --lora-alpha 16 --seq-len 128 --batch 4 \
    -o .device/train/docs.tlm
  build/bin/tlc-opt targets/vulkan-spirv/test/Inputs/add.mlir \
    -tlc-gpu-form-dispatches -tlc-vulkan-lower-to-spirv > .device/add.mlir
  sed -n '/^  spirv.module/,/^  }$/p' .device/add.mlir > .device/add.spv.mlir
  mlir-translate-22 --no-implicit-module --serialize-spirv .device/add.spv.mlir \
    -o .device/add.spv
  ;;
run)
  out=${2:-.}
  for deb in .device/debs/*.deb; do dpkg -x "$deb" .device/root; done
  export LD_LIBRARY_PATH="$PWD/.device/root/usr/lib/x86_64-linux-gnu:$PWD/build/lib"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | tee -a "$out/gpu.txt" || true
  build/bin/vulkan_test .device/add.spv add_d80_t4 80 4 2 2>&1 | tee "$out/driver.txt"
  python3 test/e2e/run_goldens.py --bin build/bin --modules .device/modules \
    --threads 1 2>&1 | tee "$out/goldens.txt"
  for m in .device/lora/*.tlm; do
    case=$(basename "$m" .tlm)
    ids=$(python3 -c "import numpy as np; print(','.join(map(str, np.load('test/e2e/lora-goldens/$case/input_ids.npy').tolist())))")
    build/bin/tlc-run logits "$m" --ids "$ids" -o "$out/$case.npy"
    echo "$case (LoRA): $(python3 test/e2e/check_logits.py "$out/$case.npy" \
      test/e2e/lora-goldens/$case/logits.npy | head -1)" | tee -a "$out/goldens.txt"
  done
  python3 test/e2e/check_lora_grads.py --bin build/bin --modules .device/train \
    --threads 1 2>&1 | tee "$out/train-grads.txt"
  python3 test/e2e/train_resume.py --bin build/bin \
    --module .device/train/resume.tlm --data .device/train/resume.npy \
    --steps 1000 2>&1 | tee "$out/train-resume.txt"
  for device in gpu cpu; do
    rm -rf "$out/docs-$device"
    build/bin/tlc-run train .device/train/docs.tlm --device $device \
      --data demo/licenses.txt --steps 20 --lr 3e-3 --seed 1 --threads 8 \
      --out "$out/docs-$device" --log "$out/docs-$device.jsonl" \
      2>&1 | tail -3 | tee -a "$out/train-speed.txt"
  done
  ;;
*)
  echo "usage: $0 prepare | run OUT" >&2
  exit 2
  ;;
esac
