// Device profiles (targets/devices.json, embedded at build time): what
// `tlc compile --device NAME` sets, and what `tlc devices` lists.
#ifndef TLC_COMPILER_TARGET_DEVICEPROFILES_H
#define TLC_COMPILER_TARGET_DEVICEPROFILES_H

#include <cstdint>
#include <string>
#include <vector>

namespace tlc {

struct DeviceProfile {
  std::string name, description, soc, os;
  std::string cpu;         // a --target spec
  std::string cores;       // the cores, for people
  int threads = 0;         // default worker threads (0: every online CPU)
  int64_t ramMib = 0;
  std::string activations; // "f32" (f16 is planned for phones)
  int64_t trainMemoryBudgetMib = 0;
  std::string gpu;         // the GPU target later backends fill in
};

/// Every profile, in the file's order.
const std::vector<DeviceProfile> &deviceProfiles();
/// The profile named `name`, or null.
const DeviceProfile *findDeviceProfile(const std::string &name);

} // namespace tlc

#endif // TLC_COMPILER_TARGET_DEVICEPROFILES_H
