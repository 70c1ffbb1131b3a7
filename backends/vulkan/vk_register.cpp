// The Vulkan backend's registry entry (engine/backend.h): factory, default device and the device
// listing that `rankforge devices` prints.
#include <fmt/format.h>

#include <stdexcept>

#include "backends/vulkan/vk_device.h"
#include "backends/vulkan/vk_matmul16.h"
#include "engine/backend.h"

namespace rf::vk {
std::unique_ptr<rf::Backend> make_vulkan_backend(int index);  // vk_backend.cpp

namespace {
// "matmul f16: simt_f16  bf16: f32math": the 16-bit GEMM kernels this device runs (vk_matmul16.h).
std::string matmul16_families(const DeviceInfo& d) {
  try {
    auto name = [&](DType t) {
      std::string_view k = matmul16_kernel(d, t);
      return k.empty() ? std::string("none") : std::string(k);
    };
    return fmt::format("matmul f16: {}  bf16: {}", name(DType::F16), name(DType::BF16));
  } catch (const std::exception& e) {
    return e.what();  // a bad RANKFORGE_VK_MATMUL16 shows here rather than hiding the device
  }
}

std::vector<std::string> describe_vulkan() {
  std::vector<std::string> out;
  const auto devs = list_devices();
  if (devs.empty()) out.push_back("vulkan: no device found");
  for (const auto& d : devs)
    out.push_back(fmt::format(
        "vulkan:{}: {} [{}] Vulkan {}.{} memory {:.1f} GiB subgroup {} shared {} KiB fp16 {} bf16 {} "
        "coopmat khr {} nv {} {}{}",
        d.index, d.name, device_type_name(d.type), VK_API_VERSION_MAJOR(d.api_version),
        VK_API_VERSION_MINOR(d.api_version), double(d.device_local_bytes) / (1 << 30), d.subgroup_size,
        d.shared_memory / 1024, d.fp16, d.bf16, d.coopmat_khr, d.coopmat_nv, matmul16_families(d),
        d.is_cpu() ? " (CPU device: used when named as vulkan:N or with RANKFORGE_VULKAN_ALLOW_CPU=1)" : ""));
  return out;
}
}  // namespace
}  // namespace rf::vk

namespace rf {
BackendEntry vulkan_backend_entry() {
  return {.type = DeviceType::Vulkan,
          .make = &vk::make_vulkan_backend,
          .summary = "vulkan",
          .default_index = &vk::default_device_index,
          .describe = &vk::describe_vulkan,
          .local_index = &vk::local_device_index};
}
}  // namespace rf
