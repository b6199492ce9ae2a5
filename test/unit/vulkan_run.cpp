// Runs a plan of compiled kernels on the Vulkan driver, for tests that hold
// single kernels against plain references (targets/gpu/test/kernels.py
// writes the plan and checks what comes back).
//
//   vulkan_run PLAN
//
// PLAN, one directive a line, in this order:
//   kernel NAME FILE.spv        kernels, numbered in order (one image each)
//   buffer NAME BYTES [FILE]    device buffers: FILE's bytes, else zeros
//   dispatch KERNEL FACTOR CONSTANT BUFFER...  FACTOR * T + CONSTANT groups
//   args T POS ROWS             the push constants of every kernel
//   read BUFFER FILE            written after the run
#include "runtime/drivers/vulkan/VulkanDevice.h"
#include "runtime/src/module_generated.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

using namespace tlc::hal;

static bool ok(tlc_status_t s, const std::string &what) {
  if (!s)
    return true;
  std::fprintf(stderr, "vulkan_run: %s: %s\n", what.c_str(),
               tlc_status_message(s));
  tlc_status_free(s);
  return false;
}

static int fail(const std::string &why) {
  std::fprintf(stderr, "vulkan_run: %s\n", why.c_str());
  return 1;
}

static bool readFile(const std::string &path, std::string &bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  bytes.assign(std::istreambuf_iterator<char>(in), {});
  return true;
}

int main(int argc, char **argv) {
  if (argc != 2)
    return fail("usage: vulkan_run PLAN");
  std::ifstream plan(argv[1]);
  if (!plan)
    return fail(std::string("cannot read ") + argv[1]);

  std::vector<std::string> names;
  std::string image;
  std::vector<uint32_t> offsets;
  struct BufferInit {
    std::string name;
    uint64_t bytes;
    std::string file;
  };
  std::vector<BufferInit> buffers;
  std::map<std::string, uint64_t> sizes;
  struct Dispatch {
    uint32_t kernel = 0;
    int64_t factor = 0, constant = 0;
    std::vector<std::string> bindings;
  };
  std::vector<Dispatch> dispatches;
  std::vector<std::pair<std::string, std::string>> reads;
  CallArgs args;
  bool haveArgs = false;
  // Every line is checked before a device is touched: one error naming the
  // plan's line, no run.
  std::string line;
  for (int lineNo = 1; std::getline(plan, line); ++lineNo) {
    std::istringstream words(line);
    std::string op, extra;
    words >> op;
    std::string where = std::string(argv[1]) + ":" + std::to_string(lineNo);
    auto done = [&] { return !(words >> extra); }; // nothing left on the line
    if (op == "kernel") {
      std::string name, path, spv;
      if (!(words >> name >> path) || !done())
        return fail(where + ": kernel NAME FILE.spv");
      if (!readFile(path, spv) || spv.empty() || spv.size() % 4)
        return fail(where + ": cannot read SPIR-V " + path);
      names.push_back(name);
      offsets.push_back((uint32_t)image.size());
      image += spv;
    } else if (op == "buffer") {
      BufferInit b;
      int64_t bytes = 0;
      if (!(words >> b.name >> bytes) || bytes <= 0 || bytes > (1ll << 32))
        return fail(where + ": buffer NAME BYTES [FILE], 0 < BYTES <= 4 GiB");
      words >> b.file;
      if (!done() || sizes.count(b.name))
        return fail(where + ": buffer NAME BYTES [FILE], each NAME once");
      b.bytes = (uint64_t)bytes;
      std::string contents;
      if (!b.file.empty() &&
          (!readFile(b.file, contents) || contents.size() != b.bytes))
        return fail(where + ": " + b.file + " does not hold " +
                    std::to_string(b.bytes) + " bytes");
      buffers.push_back(b);
      sizes[b.name] = b.bytes;
    } else if (op == "dispatch") {
      Dispatch d;
      if (!(words >> d.kernel >> d.factor >> d.constant) ||
          d.kernel >= names.size() || d.factor < 0)
        return fail(where + ": dispatch KERNEL FACTOR CONSTANT BUFFER..., "
                            "KERNEL one of the kernels above");
      for (std::string b; words >> b;) {
        if (!sizes.count(b))
          return fail(where + ": no buffer " + b + " above");
        d.bindings.push_back(b);
      }
      if (d.bindings.empty())
        return fail(where + ": a dispatch binds at least one buffer");
      dispatches.push_back(d);
    } else if (op == "args") {
      if (!(words >> args.T >> args.pos >> args.rows) || !done() ||
          args.T < 0 || args.pos < 0 || args.rows < 0)
        return fail(where + ": args T POS ROWS, none negative");
      haveArgs = true;
    } else if (op == "read") {
      std::string b, path;
      if (!(words >> b >> path) || !done() || !sizes.count(b))
        return fail(where + ": read BUFFER FILE, BUFFER one of those above");
      reads.push_back({b, path});
    } else if (!op.empty()) {
      return fail(where + ": unknown directive '" + op + "'");
    }
  }
  if (dispatches.empty() || !haveArgs)
    return fail(std::string(argv[1]) + ": no dispatch or no args line");

  flatbuffers::FlatBufferBuilder fbb;
  auto exe = tlc::fb::CreateExecutable(
      fbb, fbb.CreateString("vulkan"), fbb.CreateString("spirv1.6"), 0,
      fbb.CreateString("spirv"), fbb.CreateVectorOfStrings(names),
      fbb.CreateVector((const uint8_t *)image.data(), image.size()), 0, 0, 0,
      fbb.CreateVector(offsets));
  fbb.Finish(exe);
  const auto *def = flatbuffers::GetRoot<tlc::fb::Executable>(
      fbb.GetBufferPointer());

  Driver &driver = vulkanDriver();
  std::string why;
  if (!driver.canRun(*def, &why))
    return fail("no Vulkan device runs these kernels: " + why);
  std::unique_ptr<Device> device;
  std::unique_ptr<Executable> executable;
  std::unique_ptr<CommandBuffer> commands;
  std::unique_ptr<Queue> queue;
  if (!ok(driver.createDevice(&device), "device") ||
      !ok(device->loadExecutable(*def, &executable), "kernels") ||
      !ok(device->createCommandBuffer(*executable, &commands), "commands") ||
      !ok(device->createQueue({}, &queue), "queue"))
    return 1;

  std::map<std::string, std::unique_ptr<Buffer>> memory;
  for (const BufferInit &b : buffers) {
    std::string bytes(b.bytes, '\0');
    if (!b.file.empty() && !readFile(b.file, bytes))
      return fail("cannot read " + b.file);
    std::unique_ptr<Buffer> buffer;
    if (!ok(device->allocator().allocate(MemoryKind::DeviceLocal, b.bytes,
                                         &buffer),
            "buffer " + b.name) ||
        !ok(queue->write(bytes.data(), {buffer.get(), 0, b.bytes}),
            "buffer " + b.name))
      return 1;
    memory[b.name] = std::move(buffer);
  }
  for (const Dispatch &d : dispatches) {
    DispatchDesc desc;
    desc.kernel = d.kernel;
    desc.tokensFactor = d.factor;
    desc.constant = d.constant;
    for (const std::string &b : d.bindings) {
      desc.bindings.push_back({memory[b].get(), 0, sizes[b]});
      desc.dynamic.push_back(DynamicSpace::None);
    }
    if (!ok(commands->dispatch(desc), "dispatch of " + names[d.kernel]))
      return 1;
  }
  std::unique_ptr<Fence> fence;
  if (!ok(queue->submit(*commands, args, nullptr, &fence), "submit") ||
      !ok(fence->wait(), "wait"))
    return 1;
  for (const auto &[name, path] : reads) {
    std::string bytes(sizes[name], '\0');
    if (!ok(queue->read({memory[name].get(), 0, sizes[name]}, bytes.data()),
            "read " + name))
      return 1;
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), bytes.size());
    if (!out)
      return fail("cannot write " + path);
  }
  std::printf("device: %s, %zu dispatches\n", device->name(),
              dispatches.size());
  return 0;
}
