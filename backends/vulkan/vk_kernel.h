#pragma once
// Device buffers and compute kernels: the minimum to run one shader on a Vulkan device and read
// the result back. The backend proper (sub-allocated blocks, staging ring, batched command
// buffers) builds on these pieces.
#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "backends/vulkan/vk_device.h"

namespace rf::vk {

// One VkBuffer with its own mapped memory, device-local when the device offers mappable
// device-local memory (ReBAR GPUs, lavapipe); the backend adds staging for the other case.
class DeviceBuffer {
 public:
  DeviceBuffer(Context& ctx, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  VkBuffer handle() const { return buffer_; }
  size_t bytes() const { return bytes_; }
  void write(size_t offset, std::span<const std::byte> src);
  void read(size_t offset, std::span<std::byte> dst) const;

 private:
  Context& ctx_;
  size_t bytes_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
};

// A compute pipeline over `bindings` storage buffers with `push_bytes` of push constants.
class Kernel {
 public:
  Kernel(Context& ctx, std::span<const uint32_t> spirv, uint32_t bindings, uint32_t push_bytes);
  ~Kernel();
  Kernel(const Kernel&) = delete;
  Kernel& operator=(const Kernel&) = delete;
  // Records `repeat` back-to-back dispatches (compute->compute barriers between them) in one
  // command buffer, submits and waits (synchronous; batching across kernels comes with the backend).
  void run(std::span<DeviceBuffer* const> buffers, std::span<const std::byte> push, uint32_t groups_x,
           uint32_t groups_y = 1, uint32_t groups_z = 1, uint32_t repeat = 1);

 private:
  Context& ctx_;
  uint32_t bindings_, push_bytes_;
  VkShaderModule module_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  VkDescriptorPool pool_ = VK_NULL_HANDLE;
};

}  // namespace rf::vk
