#pragma once
// Vulkan instance, physical-device discovery and selection, and the logical device with one
// compute queue. A CPU-type device (lavapipe) is chosen only by index or when explicitly allowed.
#include <vulkan/vulkan.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rf::vk {

struct DeviceInfo {
  int index = 0;
  std::string name;
  VkPhysicalDeviceType type = VK_PHYSICAL_DEVICE_TYPE_OTHER;
  uint32_t api_version = 0;
  uint64_t device_local_bytes = 0;  // largest device-local heap
  uint32_t subgroup_size = 0;
  uint32_t shared_memory = 0;      // maxComputeSharedMemorySize
  uint64_t max_storage_range = 0;  // maxStorageBufferRange
  uint32_t max_push_constants = 0;
  uint64_t min_storage_align = 4;  // minStorageBufferOffsetAlignment
  uint32_t max_groups_x = 65535;   // maxComputeWorkGroupCount[0]
  uint32_t max_groups_yz = 65535;  // min of maxComputeWorkGroupCount[1], [2]
  bool fp16 = false;               // shaderFloat16
  bool storage16 = false;          // storageBuffer16BitAccess + shaderInt16 (uint16_t words)
  bool storage8 = false;           // storageBuffer8BitAccess + shaderInt8 (bool tensors)
  bool subgroup_arithmetic = false;
  bool bf16 = false;                             // VK_KHR_shader_bfloat16
  bool coopmat_khr = false, coopmat_nv = false;  // the extensions are listed
  // The cooperative-matrix feature is on and offers the shape matmul_coopmat.comp uses: 16x16x16,
  // f16 A/B, f32 C/D, subgroup scope, plus the Vulkan memory model its SPIR-V declares.
  bool coopmat_nv_f16 = false, coopmat_khr_f16 = false;
  bool is_cpu() const { return type == VK_PHYSICAL_DEVICE_TYPE_CPU; }
};

std::string_view device_type_name(VkPhysicalDeviceType t);

// Every Vulkan device the loader sees; empty (not an error) when there is no loader or driver.
std::vector<DeviceInfo> list_devices();
// True once the process is exiting (after main): destructors then leave Vulkan objects to the OS,
// because the driver may already have run its own exit-time teardown (vk_device.cpp).
bool process_exiting();

// Index to use: `requested` if given; else the first non-CPU device; else a CPU device when
// allow_cpu (or RANKFORGE_VULKAN_ALLOW_CPU=1). Throws a one-line error when nothing fits.
int choose_device(const std::vector<DeviceInfo>& devices, std::optional<int> requested, bool allow_cpu);
int default_device_index();              // choose_device over every device, nothing requested
int local_device_index(int local_rank);  // vulkan:auto

// Instance + logical device + compute queue + command pool. Not copyable; destroys in reverse.
class Context {
 public:
  explicit Context(int device_index);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const { return info_; }
  VkDevice device() const { return device_; }
  VkPhysicalDevice physical() const { return physical_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return family_; }
  VkCommandPool command_pool() const { return pool_; }
  // Memory type with all `want` flags among those allowed by `type_bits`, or -1.
  int memory_type(uint32_t type_bits, VkMemoryPropertyFlags want) const;
  const VkPhysicalDeviceMemoryProperties& memory_properties() const { return mem_; }

 private:
  DeviceInfo info_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t family_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties mem_{};
};

VkInstance create_instance();

}  // namespace rf::vk
