#include <fmt/format.h>

#include <array>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "engine/backend.h"

namespace rf::cpu {
std::unique_ptr<rf::Backend> make_cpu_backend(int index);
}

namespace rf {

namespace {
struct Registry {
  std::mutex mu;
  std::array<BackendFactory, size_t(DeviceType::Count)> factories{};
  std::array<std::unique_ptr<Backend>, size_t(DeviceType::Count)> instances{};  // index 0 of each type
};
Registry& registry() {
  static Registry r;
  return r;
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
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return r.factories[size_t(type)] != nullptr;
}

Backend& backend_for(Device d) {
  if (d.type == DeviceType::CPU) {  // fast path: every CPU tensor op lands here
    static std::unique_ptr<Backend> cpu = rf::cpu::make_cpu_backend(0);
    return *cpu;
  }
  if (d.type >= DeviceType::Count) throw std::invalid_argument("[device] invalid device type");
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto& inst = r.instances[size_t(d.type)];
  if (!inst) {
    BackendFactory f = r.factories[size_t(d.type)];
    if (!f) throw std::runtime_error(fmt::format("[device] backend '{}' is not available in this build", device_name(d.type)));
    inst = f(d.index);
  }
  return *inst;
}

}  // namespace rf
