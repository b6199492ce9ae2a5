// The Vulkan driver of the runtime's device layer (VulkanDevice.cpp).
#ifndef TLC_RUNTIME_DRIVERS_VULKAN_VULKANDEVICE_H
#define TLC_RUNTIME_DRIVERS_VULKAN_VULKANDEVICE_H

#include "runtime/src/hal/Device.h"

namespace tlc::hal {
/// Runs "spirv" executables for target "vulkan"; its device exists when a
/// Vulkan loader and a Vulkan 1.1 device with a compute queue do.
Driver &vulkanDriver();
} // namespace tlc::hal

#endif // TLC_RUNTIME_DRIVERS_VULKAN_VULKANDEVICE_H
