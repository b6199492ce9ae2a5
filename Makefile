# make build | test | demo — each installs what is missing first (Debian,
# as root), then configures with CMake + Ninja into build/.
# make build-aarch64 cross-builds the runtime, tlc-run and the tests' runtime
# programs for aarch64-linux-gnu into build-aarch64/ (run under qemu-aarch64).
BUILD ?= build
JOBS ?= $(shell nproc)
APT_PACKAGES = cmake ninja-build ccache clang-22 lld-22 liblld-22-dev \
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools libclang-rt-22-dev \
  flatbuffers-compiler libflatbuffers-dev nlohmann-json3-dev libgtest-dev \
  python3-numpy libc6-dev-arm64-cross libstdc++-12-dev-arm64-cross \
  libgcc-12-dev-arm64-cross qemu-user spirv-tools mesa-vulkan-drivers \
  libvulkan-dev libspirv-cross-c-shared-dev pkg-config \
  vulkan-validationlayers
PYTHON ?= python3
PY_PACKAGES = numpy safetensors tokenizers "lit<24"
MODEL ?= models/tiny-bitnet-docs

.PHONY: deps build build-aarch64 test demo clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && apt-get install -y -q $$missing; fi
	@$(PYTHON) -c "import numpy, safetensors, tokenizers, lit" 2>/dev/null || \
	  $(PYTHON) -m pip install -q $(PY_PACKAGES)

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
	  -DPython3_EXECUTABLE=$$(command -v $(PYTHON))

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD) -j $(JOBS)

build-aarch64: deps
	@test -f build-aarch64/build.ninja || cmake -S . -B build-aarch64 -G Ninja \
	  -DCMAKE_BUILD_TYPE=Release -DTLC_BUILD_COMPILER=OFF \
	  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
	  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
	ninja -C build-aarch64 -j $(JOBS)

test: build build-aarch64
	ninja -C $(BUILD) check

demo: build
	$(BUILD)/bin/tlc compile $(MODEL) -o $(BUILD)/demo.tlm
	$(BUILD)/bin/tlc-run info $(BUILD)/demo.tlm
	$(BUILD)/bin/tlc-run generate $(BUILD)/demo.tlm --prompt "The Python Tutorial" --max-new-tokens 48
	@echo "== Fine-tuning: LoRA r=8 on all projections, 60 steps on demo/licenses.txt"
	$(BUILD)/bin/tlc compile $(MODEL) --train --lora-rank 8 --lora-alpha 16 \
	  --seq-len 128 --batch 4 -o $(BUILD)/demo-train.tlm
	@echo "== Before:"
	$(BUILD)/bin/tlc-run generate $(BUILD)/demo-train.tlm --prompt "You may convey" --max-new-tokens 40
	rm -rf $(BUILD)/demo-adapter
	$(BUILD)/bin/tlc-run train $(BUILD)/demo-train.tlm --data demo/licenses.txt \
	  --steps 60 --lr 3e-3 --seed 1 --out $(BUILD)/demo-adapter --log $(BUILD)/demo-train.jsonl
	@echo "== After (PEFT adapter in $(BUILD)/demo-adapter):"
	$(BUILD)/bin/tlc-run generate $(BUILD)/demo-train.tlm --prompt "You may convey" --max-new-tokens 40 \
	  --adapter $(BUILD)/demo-adapter

clean:
	rm -rf $(BUILD) build-aarch64
