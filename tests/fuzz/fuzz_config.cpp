// libFuzzer target for the `rankforge train` YAML loader, rf::tools::parse_train_config. Input:
// leading lines "--set key=value" become overrides (as on the command line), the rest is the YAML.
// It must return, or throw a std::runtime_error whose one-line message starts with "[config] ".
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tools/train_config.h"

namespace {

[[noreturn]] void violated(std::string_view what, std::string_view msg) {
  std::fprintf(stderr, "fuzz_config: invariant violated: %.*s: %.*s\n", int(what.size()), what.data(), int(msg.size()),
               msg.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  constexpr std::string_view kSet = "--set ";
  while (in.starts_with(kSet)) {
    const size_t end = std::min(in.find('\n'), in.size());
    overrides.emplace_back(in.substr(kSet.size(), end - kSet.size()));
    in.remove_prefix(std::min(end + 1, in.size()));
  }
  try {
    rf::tools::parse_train_config(std::string(in), "fuzz.yaml", overrides);
  } catch (const std::runtime_error& e) {
    const std::string_view msg = e.what();
    if (!msg.starts_with("[config] ")) violated("message does not start with [config]", msg);
    if (msg.find('\n') != std::string_view::npos) violated("message spans lines", msg);
  } catch (const std::exception& e) {
    violated("not a std::runtime_error", e.what());
  }
  return 0;
}
