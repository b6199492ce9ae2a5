// Parses the embedded targets/devices.json once.
#include "compiler/target/DeviceProfiles.h"

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

namespace tlc {
namespace {
#include "compiler/target/DevicesJson.inc" // kDevicesJson

std::vector<DeviceProfile> parse() {
  std::vector<DeviceProfile> out;
  nlohmann::json doc = nlohmann::json::parse(kDevicesJson, nullptr, false);
  if (doc.is_discarded() || !doc.contains("devices")) {
    // The file is part of the build and checked by its test: this is a bug.
    fprintf(stderr, "tlc: internal error: targets/devices.json is malformed\n");
    abort();
  }
  for (const nlohmann::json &d : doc["devices"]) {
    DeviceProfile p;
    p.name = d.value("name", "");
    p.description = d.value("description", "");
    p.soc = d.value("soc", "");
    p.os = d.value("os", "");
    p.cpu = d.value("cpu", "");
    p.cores = d.value("cores", "");
    p.threads = d.value("threads", 0);
    p.ramMib = d.value("ram_mib", (int64_t)0);
    p.activations = d.value("activations", "f32");
    p.trainMemoryBudgetMib = d.value("train_memory_budget_mib", (int64_t)0);
    p.gpu = d.value("gpu", "");
    out.push_back(std::move(p));
  }
  return out;
}
} // namespace

const std::vector<DeviceProfile> &deviceProfiles() {
  static const std::vector<DeviceProfile> profiles = parse();
  return profiles;
}

const DeviceProfile *findDeviceProfile(const std::string &name) {
  for (const DeviceProfile &p : deviceProfiles())
    if (p.name == name)
      return &p;
  return nullptr;
}

} // namespace tlc
