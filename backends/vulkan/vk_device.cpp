#include "backends/vulkan/vk_device.h"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "backends/vulkan/vk_check.h"

namespace rf::vk {

std::string_view result_name(VkResult r) {
  switch (r) {
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    default: return "VkResult";
  }
}

void fail(const char* call, VkResult r) {
  throw std::runtime_error(fmt::format("[vulkan] {} failed: {} ({})", call, result_name(r), int(r)));
}

std::string_view device_type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

namespace {
// Process exit. The driver's own exit-time destructors (NVIDIA's, registered when the loader opens it
// inside vkCreateInstance) run before the destructors of statics made earlier, such as the backend
// registry, whose Vulkan objects would then be destroyed through a torn-down driver (a segfault after
// main returned, seen on an H200). So after every vkCreateInstance an exit handler is registered,
// which runs before the driver's: it waits for the live devices to go idle and marks the process as
// exiting; from then on the destructors leave their Vulkan objects to the OS.
std::atomic<bool> g_exiting{false};
std::mutex g_live_mu;
std::vector<VkDevice> g_live;  // devices of live Contexts
std::atomic<int> g_handlers{0};

void on_exit() {
  if (g_exiting.exchange(true)) return;  // registered once per instance: the first run does the work
  std::lock_guard lock(g_live_mu);
  for (VkDevice d : g_live) vkDeviceWaitIdle(d);
}

void register_exit_handler() {
  if (g_handlers.fetch_add(1) < 16) std::atexit(on_exit);  // a process makes a few instances; atexit allows >= 32
}
}  // namespace

bool process_exiting() { return g_exiting.load(); }

VkInstance create_instance() {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "rankforge";
  app.pEngineName = "rankforge";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  VkInstance inst = VK_NULL_HANDLE;
  RF_VK_CHECK(vkCreateInstance(&ci, nullptr, &inst));
  register_exit_handler();
  return inst;
}

namespace {

bool has_extension(VkPhysicalDevice pd, const char* name) {
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> ext(n);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, ext.data());
  for (auto& e : ext)
    if (std::strcmp(e.extensionName, name) == 0) return true;
  return false;
}

// Whether the cooperative-matrix shapes on offer include the one matmul_coopmat.comp is built for.
// The queries are extension entry points, so they come through vkGetInstanceProcAddr.
bool nv_coopmat_shape(VkInstance inst, VkPhysicalDevice pd) {
  auto query = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
      vkGetInstanceProcAddr(inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
  if (!query) return false;
  uint32_t n = 0;
  if (query(pd, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkCooperativeMatrixPropertiesNV> props(n, {VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV});
  if (query(pd, &n, props.data()) != VK_SUCCESS) return false;
  for (const auto& p : props)
    if (p.MSize == 16 && p.NSize == 16 && p.KSize == 16 && p.AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
        p.BType == VK_COMPONENT_TYPE_FLOAT16_NV && p.CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
        p.DType == VK_COMPONENT_TYPE_FLOAT32_NV && p.scope == VK_SCOPE_SUBGROUP_NV)
      return true;
  return false;
}

#ifdef VK_KHR_cooperative_matrix
bool khr_coopmat_shape(VkInstance inst, VkPhysicalDevice pd) {
  auto query = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR>(
      vkGetInstanceProcAddr(inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR"));
  if (!query) return false;
  uint32_t n = 0;
  if (query(pd, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkCooperativeMatrixPropertiesKHR> props(n, {VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR});
  if (query(pd, &n, props.data()) != VK_SUCCESS) return false;
  for (const auto& p : props)
    if (p.MSize == 16 && p.NSize == 16 && p.KSize == 16 && p.AType == VK_COMPONENT_TYPE_FLOAT16_KHR &&
        p.BType == VK_COMPONENT_TYPE_FLOAT16_KHR && p.CType == VK_COMPONENT_TYPE_FLOAT32_KHR &&
        p.ResultType == VK_COMPONENT_TYPE_FLOAT32_KHR && p.scope == VK_SCOPE_SUBGROUP_KHR)
      return true;
  return false;
}
#endif

DeviceInfo describe(VkInstance inst, VkPhysicalDevice pd, int index) {
  DeviceInfo d;
  d.index = index;
  VkPhysicalDeviceSubgroupProperties sub{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props.pNext = &sub;
  vkGetPhysicalDeviceProperties2(pd, &props);
  d.name = props.properties.deviceName;
  d.type = props.properties.deviceType;
  d.api_version = props.properties.apiVersion;
  d.subgroup_size = sub.subgroupSize;
  const VkPhysicalDeviceLimits& lim = props.properties.limits;
  d.min_storage_align = std::max<uint64_t>(lim.minStorageBufferOffsetAlignment, 4);
  d.max_groups_x = lim.maxComputeWorkGroupCount[0];
  d.max_groups_yz = std::min(lim.maxComputeWorkGroupCount[1], lim.maxComputeWorkGroupCount[2]);
  d.subgroup_arithmetic = (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                          (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
  d.shared_memory = props.properties.limits.maxComputeSharedMemorySize;
  d.max_storage_range = props.properties.limits.maxStorageBufferRange;
  d.max_push_constants = props.properties.limits.maxPushConstantsSize;
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  for (uint32_t h = 0; h < mem.memoryHeapCount; ++h)
    if (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      d.device_local_bytes = std::max<uint64_t>(d.device_local_bytes, mem.memoryHeaps[h].size);
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  f11.pNext = &f12;
  VkPhysicalDeviceFeatures2 feats{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  feats.pNext = &f11;
  // The cooperative-matrix feature structs go on the chain only where the extension is listed.
  const bool has_nv = has_extension(pd, "VK_NV_cooperative_matrix");
  VkPhysicalDeviceCooperativeMatrixFeaturesNV cm_nv{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  if (has_nv) {
    cm_nv.pNext = feats.pNext;
    feats.pNext = &cm_nv;
  }
#ifdef VK_KHR_cooperative_matrix
  const bool has_khr = has_extension(pd, "VK_KHR_cooperative_matrix");
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR cm_khr{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
  if (has_khr) {
    cm_khr.pNext = feats.pNext;
    feats.pNext = &cm_khr;
  }
#endif
  if (d.api_version >= VK_API_VERSION_1_2) {
    vkGetPhysicalDeviceFeatures2(pd, &feats);
    d.fp16 = f12.shaderFloat16;
    d.storage16 = f11.storageBuffer16BitAccess;
    d.storage8 = f12.storageBuffer8BitAccess && f12.shaderInt8;
    // The 16-bit shaders read uint16_t words (explicit int16 types): storage plus shaderInt16.
    d.storage16 = d.storage16 && feats.features.shaderInt16;
    const bool cm_base = d.fp16 && d.storage16 && f12.vulkanMemoryModel;
    d.coopmat_nv_f16 = cm_base && has_nv && cm_nv.cooperativeMatrix && nv_coopmat_shape(inst, pd);
#ifdef VK_KHR_cooperative_matrix
    d.coopmat_khr_f16 = cm_base && has_khr && cm_khr.cooperativeMatrix && khr_coopmat_shape(inst, pd);
#endif
  }
  d.bf16 = has_extension(pd, "VK_KHR_shader_bfloat16");
  d.coopmat_khr = has_extension(pd, "VK_KHR_cooperative_matrix");
  d.coopmat_nv = has_extension(pd, "VK_NV_cooperative_matrix");
  return d;
}

std::vector<VkPhysicalDevice> physical_devices(VkInstance inst) {
  uint32_t n = 0;
  RF_VK_CHECK(vkEnumeratePhysicalDevices(inst, &n, nullptr));
  std::vector<VkPhysicalDevice> pds(n);
  RF_VK_CHECK(vkEnumeratePhysicalDevices(inst, &n, pds.data()));
  return pds;
}

}  // namespace

std::vector<DeviceInfo> list_devices() {
  VkInstance inst = VK_NULL_HANDLE;
  try {
    inst = create_instance();
  } catch (const std::runtime_error&) {
    return {};  // no loader or no driver: simply no devices
  }
  std::vector<DeviceInfo> out;
  try {
    auto pds = physical_devices(inst);
    for (size_t i = 0; i < pds.size(); ++i) out.push_back(describe(inst, pds[i], int(i)));
  } catch (...) {
    vkDestroyInstance(inst, nullptr);
    throw;
  }
  vkDestroyInstance(inst, nullptr);
  return out;
}

int choose_device(const std::vector<DeviceInfo>& devices, std::optional<int> requested, bool allow_cpu) {
  if (requested) {
    if (*requested < 0 || *requested >= int(devices.size()))
      throw std::invalid_argument(
          fmt::format("[vulkan] device {} does not exist ({} Vulkan device(s) found)", *requested, devices.size()));
    return *requested;
  }
  const char* env = std::getenv("RANKFORGE_VULKAN_ALLOW_CPU");
  allow_cpu = allow_cpu || (env && std::string_view(env) == "1");
  for (const auto& d : devices)
    if (!d.is_cpu()) return d.index;
  for (const auto& d : devices)
    if (allow_cpu) return d.index;
  if (devices.empty()) throw std::runtime_error("[vulkan] no Vulkan device found (is a Vulkan driver installed?)");
  throw std::runtime_error(
      "[vulkan] only CPU-type Vulkan devices found; pick one by index (vulkan:N) or set RANKFORGE_VULKAN_ALLOW_CPU=1");
}

int default_device_index() { return choose_device(list_devices(), std::nullopt, false); }

// vulkan:auto: the GPUs (CPU-type devices only where RANKFORGE_VULKAN_ALLOW_CPU=1 and no GPU exists),
// round robin by the local rank.
int local_device_index(int local_rank) {
  const std::vector<DeviceInfo> all = list_devices();
  std::vector<int> usable;
  for (const auto& d : all)
    if (!d.is_cpu()) usable.push_back(d.index);
  if (usable.empty()) usable.push_back(choose_device(all, std::nullopt, false));  // throws its reason
  return usable[size_t(local_rank) % usable.size()];
}

Context::Context(int device_index) {
  instance_ = create_instance();
  try {
    auto pds = physical_devices(instance_);
    if (device_index < 0 || device_index >= int(pds.size()))
      throw std::invalid_argument(fmt::format("[vulkan] device {} does not exist", device_index));
    physical_ = pds[size_t(device_index)];
    info_ = describe(instance_, physical_, device_index);
    if (info_.api_version < VK_API_VERSION_1_2)
      throw std::runtime_error(fmt::format("[vulkan] {} offers Vulkan {}.{}; 1.2 is required", info_.name,
                                           VK_API_VERSION_MAJOR(info_.api_version),
                                           VK_API_VERSION_MINOR(info_.api_version)));
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, nullptr);
    std::vector<VkQueueFamilyProperties> qf(nq);
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, qf.data());
    family_ = UINT32_MAX;
    for (uint32_t i = 0; i < nq && family_ == UINT32_MAX; ++i)
      if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family_ = i;
    if (family_ == UINT32_MAX) throw std::runtime_error(fmt::format("[vulkan] {} has no compute queue", info_.name));
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qci.queueFamilyIndex = family_;
    qci.queueCount = 1;
    qci.pQueuePriorities = &prio;
    VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
    VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    f11.storageBuffer16BitAccess = info_.storage16;
    f12.shaderFloat16 = info_.fp16;
    f12.storageBuffer8BitAccess = info_.storage8;
    f12.shaderInt8 = info_.storage8;
    f11.pNext = &f12;
    VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    f2.features.shaderInt16 = info_.storage16;
    f2.pNext = &f11;
    // Cooperative matrices (matmul_coopmat.comp): the extension, its feature and the Vulkan memory
    // model the shader's SPIR-V declares, only where describe() found the shape it uses.
    std::vector<const char*> exts;
    f12.vulkanMemoryModel = info_.coopmat_nv_f16 || info_.coopmat_khr_f16;
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cm_nv{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    if (info_.coopmat_nv_f16) {
      exts.push_back(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
      cm_nv.cooperativeMatrix = VK_TRUE;
      cm_nv.pNext = f12.pNext;
      f12.pNext = &cm_nv;
    }
#ifdef VK_KHR_cooperative_matrix
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR cm_khr{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
    if (info_.coopmat_khr_f16) {
      exts.push_back(VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);
      cm_khr.cooperativeMatrix = VK_TRUE;
      cm_khr.pNext = f12.pNext;
      f12.pNext = &cm_khr;
    }
#endif
    VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    dci.pNext = &f2;
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci;
    dci.enabledExtensionCount = uint32_t(exts.size());
    dci.ppEnabledExtensionNames = exts.data();
    RF_VK_CHECK(vkCreateDevice(physical_, &dci, nullptr, &device_));
    vkGetDeviceQueue(device_, family_, 0, &queue_);
    VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pci.queueFamilyIndex = family_;
    RF_VK_CHECK(vkCreateCommandPool(device_, &pci, nullptr, &pool_));
    vkGetPhysicalDeviceMemoryProperties(physical_, &mem_);
    std::lock_guard lock(g_live_mu);
    g_live.push_back(device_);
  } catch (...) {
    if (device_) vkDestroyDevice(device_, nullptr);
    vkDestroyInstance(instance_, nullptr);
    throw;
  }
}

Context::~Context() {
  if (process_exiting()) return;  // left to the OS (on_exit above)
  if (device_) {
    {
      std::lock_guard lock(g_live_mu);
      std::erase(g_live, device_);
    }
    vkDeviceWaitIdle(device_);
    if (pool_) vkDestroyCommandPool(device_, pool_, nullptr);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

int Context::memory_type(uint32_t type_bits, VkMemoryPropertyFlags want) const {
  for (uint32_t i = 0; i < mem_.memoryTypeCount; ++i)
    if ((type_bits & (1u << i)) && (mem_.memoryTypes[i].propertyFlags & want) == want) return int(i);
  return -1;
}

}  // namespace rf::vk
