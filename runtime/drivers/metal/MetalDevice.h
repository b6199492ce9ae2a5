// The Metal driver of the runtime's device layer (MetalDevice.mm; built on
// Apple platforms only).
#ifndef TLC_RUNTIME_DRIVERS_METAL_METALDEVICE_H
#define TLC_RUNTIME_DRIVERS_METAL_METALDEVICE_H

#include "runtime/src/hal/Device.h"

namespace tlc::hal {
/// Runs "msl" executables for target "metal" (targets/metal); its device is
/// the system's default Metal device.
Driver &metalDriver();
} // namespace tlc::hal

#endif // TLC_RUNTIME_DRIVERS_METAL_METALDEVICE_H
