#include <fmt/format.h>

#include <array>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "engine/backend.h"

namespace rf::cpu {
std::unique_ptr<rf::Backend> make_cpu_backend(int index);
}
#ifdef RF_HAVE_VULKAN
namespace rf::vk {
std::unique_ptr<rf::Backend> make_vulkan_backend(int index);
int default_device_index();  // throws a one-line reason when no usable device exists
}
#endif

namespace rf {

namespace {
struct Registry {
  Registry() {
#ifdef RF_HAVE_VULKAN
    factories[size_t(DeviceType::Vulkan)] = &rf::vk::make_vulkan_backend;
#endif
  }
  std::mutex mu;
  std::array<BackendFactory, size_t(DeviceType::Count)> factories{};
  std::map<std::pair<int, int>, std::unique_ptr<Backend>> instances;  // (type, index)
};
Registry& registry() {
  static Registry r;
  return r;
}

int default_index(DeviceType t) {
#ifdef RF_HAVE_VULKAN
  if (t == DeviceType::Vulkan) {
    static const int index = rf::vk::default_device_index();  // a throw is retried on the next call
    return index;
  }
#endif
  return 0;
}
}  // namespace

std::string_view device_name(DeviceType t) {
  switch (t) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::Vulkan: return "vulkan";
    case DeviceType::Count: break;
  }
  return "invalid";
}

void register_backend(DeviceType type, BackendFactory factory) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.factories[size_t(type)] = factory;
}

bool backend_available(DeviceType type) {
  if (type == DeviceType::CPU) return true;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    if (type >= DeviceType::Count || r.factories[size_t(type)] == nullptr) return false;
  }
  try {
    default_index(type);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

Device parse_device(std::string_view spec) {
  auto bad = [&] {
    return std::invalid_argument(fmt::format("[device] unknown device '{}' (expected cpu, vulkan or vulkan:N)", spec));
  };
  if (spec == "cpu") return {DeviceType::CPU, 0};
  if (spec.substr(0, 6) != "vulkan") throw bad();
  Device d{DeviceType::Vulkan, 0};
  if (spec.size() == 6) {
    if (!registry().factories[size_t(DeviceType::Vulkan)])
      throw std::runtime_error("[device] this build of rankforge has no Vulkan backend");
    d.index = default_index(DeviceType::Vulkan);
    return d;
  }
  if (spec[6] != ':' || spec.size() == 7) throw bad();
  int v = 0;
  for (char c : spec.substr(7)) {
    if (c < '0' || c > '9' || v > 100000) throw bad();
    v = v * 10 + (c - '0');
  }
  d.index = v;
  return d;
}

std::string device_str(Device d) {
  return d.type == DeviceType::CPU ? "cpu" : fmt::format("{}:{}", device_name(d.type), d.index);
}

Device default_device() {
  const char* env = std::getenv("RANKFORGE_DEVICE");
  return env && *env ? parse_device(env) : Device{};
}

Backend& backend_for(Device d) {
  if (d.type == DeviceType::CPU) {  // fast path: every CPU tensor op lands here
    static std::unique_ptr<Backend> cpu = rf::cpu::make_cpu_backend(0);
    return *cpu;
  }
  if (d.type >= DeviceType::Count) throw std::invalid_argument("[device] invalid device type");
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto& inst = r.instances[{int(d.type), d.index}];
  if (!inst) {
    BackendFactory f = r.factories[size_t(d.type)];
    if (!f) throw std::runtime_error(fmt::format("[device] backend '{}' is not available in this build", device_name(d.type)));
    inst = f(d.index);
  }
  return *inst;
}

}  // namespace rf
