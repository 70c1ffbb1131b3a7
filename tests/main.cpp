// doctest entry point. RF_BACKENDS (comma separated, default "cpu") picks the backends that
// for_each_backend() runs; a requested backend that is not present is skipped with a note.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "tests/test_util.h"

namespace rf::test {

std::vector<Device>& test_devices() {
  static std::vector<Device> devices;
  return devices;
}

namespace {
void select_backends(const char* env) {
  std::string spec = env && *env ? env : "cpu";
  std::stringstream ss(spec);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) continue;
    if (name == "cpu") {
      test_devices().push_back({DeviceType::CPU, 0});
    } else if (name == "vulkan") {
      if (backend_available(DeviceType::Vulkan))
        test_devices().push_back({DeviceType::Vulkan, 0});
      else
        fmt::print("skipping vulkan: no Vulkan device\n");
    } else {
      fmt::print("skipping {}: unknown backend (known: cpu, vulkan)\n", name);
    }
  }
}
}  // namespace

}  // namespace rf::test

int main(int argc, char** argv) {
  rf::test::select_backends(std::getenv("RF_BACKENDS"));
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
