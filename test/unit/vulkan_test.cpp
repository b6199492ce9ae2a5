// The Vulkan driver on one SPIR-V kernel compiled by tlc: the elementwise
// add of [T x D] rows (targets/vulkan-spirv/test/vulkan-driver.test builds
// it). Random inputs, T below the capacity so the rows past T must stay
// untouched, a per-call output binding, and the driver's errors.
//
//   vulkan_test KERNEL.spv NAME D TM    runs the kernel, prints "ok"
//   vulkan_test --can-run               prints why no Vulkan device runs it
#include "runtime/drivers/vulkan/VulkanDevice.h"
#include "runtime/src/module_generated.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>

using namespace tlc::hal;

static int fails = 0;
#define EXPECT(cond, ...)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);                         \
      std::printf(__VA_ARGS__);                                                \
      std::printf("\n");                                                       \
      ++fails;                                                                 \
    }                                                                          \
  } while (0)

static bool ok(tlc_status_t s) {
  if (!s)
    return true;
  std::printf("status: %s\n", tlc_status_message(s));
  tlc_status_free(s);
  return false;
}

/// A flatbuffer holding one Executable (target vulkan, format spirv), with
/// kernel_offsets where `offsets` is given.
static std::vector<uint8_t>
executable(const std::string &image, const std::string &name,
           const std::vector<uint32_t> *offsets = nullptr) {
  flatbuffers::FlatBufferBuilder fbb;
  auto img = fbb.CreateVector((const uint8_t *)image.data(), image.size());
  auto kernels = fbb.CreateVectorOfStrings(std::vector<std::string>{name});
  auto offs = offsets ? fbb.CreateVector(*offsets) : 0;
  auto exe = tlc::fb::CreateExecutable(
      fbb, fbb.CreateString("vulkan"), fbb.CreateString("spirv1.3"), 0,
      fbb.CreateString("spirv"), kernels, img, 0, 0, 0, offs);
  fbb.Finish(exe);
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

int main(int argc, char **argv) {
  Driver &driver = vulkanDriver();
  if (argc == 2 && std::string(argv[1]) == "--can-run") {
    auto bytes = executable(std::string(20, '\0'), "k");
    std::string why;
    bool can = driver.canRun(
        *flatbuffers::GetRoot<tlc::fb::Executable>(bytes.data()), &why);
    std::printf("can run: %d (%s)\n", can, why.c_str());
    return 0;
  }
  if (argc != 6) {
    std::fprintf(
        stderr,
        "usage: vulkan_test KERNEL.spv NAME D TM WORKGROUPS_PER_TOKEN\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::string spv((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  const int64_t D = std::atoll(argv[3]), TM = std::atoll(argv[4]), T = TM - 1;
  const int64_t perToken = std::atoll(argv[5]); // the dispatch's workload
  auto bytes = executable(spv, argv[2]);
  const auto *def = flatbuffers::GetRoot<tlc::fb::Executable>(bytes.data());
  std::string why;
  if (!driver.canRun(*def, &why)) {
    std::printf("FAIL: no Vulkan device: %s\n", why.c_str());
    return 1;
  }
  std::unique_ptr<Device> device;
  std::unique_ptr<Executable> exe;
  std::unique_ptr<CommandBuffer> commands;
  std::unique_ptr<Queue> queue;
  if (!ok(driver.createDevice(&device)) ||
      !ok(device->loadExecutable(*def, &exe)) ||
      !ok(device->createCommandBuffer(*exe, &commands)) ||
      !ok(device->createQueue({}, &queue)))
    return 1;
  std::printf("device: %s\n", device->name());

  // Per-kernel images: a valid one loads; bad kernel_offsets are refused
  // with one error each.
  auto loads = [&](const std::vector<uint32_t> &offsets, const char *want) {
    auto b = executable(spv, argv[2], &offsets);
    std::unique_ptr<Executable> e;
    tlc_status_t st = device->loadExecutable(
        *flatbuffers::GetRoot<tlc::fb::Executable>(b.data()), &e);
    bool good = want ? st && std::string(tlc_status_message(st)).find(want) !=
                                 std::string::npos
                     : !st;
    if (st)
      std::printf("kernel_offsets: %s\n", tlc_status_message(st));
    tlc_status_free(st);
    return good;
  };
  EXPECT(loads({0}, nullptr), "a per-kernel image was refused");
  EXPECT(loads({0, 0}, "2 entries for 1 kernels"),
         "kernel_offsets of the wrong count were accepted");
  EXPECT(loads({(uint32_t)spv.size() + 4}, "malformed"),
         "a kernel offset past the image was accepted");
  EXPECT(loads({2}, "malformed"), "a misaligned kernel image was accepted");

  // a and b in one buffer (two bindings at offsets), the output per call.
  const uint64_t rowBytes = D * 4, bytesAB = TM * rowBytes;
  const uint64_t align = 256; // >= every device's storage offset alignment
  std::unique_ptr<Buffer> ab, out;
  if (!ok(device->allocator().allocate(MemoryKind::DeviceLocal,
                                       align + bytesAB * 2, &ab)) ||
      !ok(device->allocator().allocate(MemoryKind::DeviceLocal, bytesAB, &out)))
    return 1;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> a(TM * D), b(TM * D), got(TM * D, -1.0f);
  for (float &v : a)
    v = dist(rng);
  for (float &v : b)
    v = dist(rng);
  if (!ok(queue->write(a.data(), {ab.get(), 0, bytesAB})) ||
      !ok(queue->write(b.data(), {ab.get(), align + bytesAB, bytesAB})))
    return 1;
  DispatchDesc d;
  d.kernel = 0;
  d.tokensFactor = perToken;
  d.bindings = {{ab.get(), 0, bytesAB},
                {ab.get(), align + bytesAB, bytesAB},
                {nullptr, 0, bytesAB}};
  d.dynamic = {DynamicSpace::None, DynamicSpace::None, DynamicSpace::Output};
  if (!ok(commands->dispatch(d)))
    return 1;
  // A binding outside its buffer is refused when recorded.
  DispatchDesc bad = d;
  bad.bindings[0].offset = bytesAB * 4;
  tlc_status_t s = commands->dispatch(bad);
  EXPECT(s && std::string(tlc_status_message(s)).find("outside") !=
                  std::string::npos,
         "a binding outside its buffer was accepted");
  tlc_status_free(s);

  CallArgs args;
  args.T = T;
  args.output = {out.get(), 0, bytesAB};
  std::unique_ptr<Fence> fence;
  if (!ok(queue->submit(*commands, args, nullptr, &fence)) ||
      !ok(fence->wait()) ||
      !ok(queue->read({out.get(), 0, bytesAB}, got.data())))
    return 1;
  for (int64_t t = 0; t < TM; ++t)
    for (int64_t i = 0; i < D; ++i) {
      float want = t < T ? a[t * D + i] + b[t * D + i] : 0.0f;
      EXPECT(got[t * D + i] == want, "row %lld col %lld: %g, want %g",
             (long long)t, (long long)i, got[t * D + i], want);
      if (fails > 5)
        return 1;
    }
  // A second call reuses the recorded dispatches with other scalars.
  args.T = 1;
  std::vector<float> zeros(TM * D, 0.0f);
  if (!ok(queue->write(zeros.data(), {out.get(), 0, bytesAB})) ||
      !ok(queue->submit(*commands, args, nullptr, &fence)) ||
      !ok(fence->wait()) ||
      !ok(queue->read({out.get(), 0, bytesAB}, got.data())))
    return 1;
  EXPECT(got[0] == a[0] + b[0] && got[D] == 0.0f,
         "second call: row 0 %g (want %g), row 1 %g (want 0)", got[0],
         a[0] + b[0], got[D]);
  std::printf(fails ? "FAILED\n" : "ok\n");
  return fails ? 1 : 0;
}
