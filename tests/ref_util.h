#pragma once
// Helpers the reference-comparison tests share: the tests/ scripts, a python3 with NumPy to run them, and
// the dtypes a safetensors file holds.
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tests/test_util.h"

namespace rf::test {

// tests/<name>: beside RF_FIXTURES (meson sets it), or found from the repo root or build dir.
inline std::filesystem::path test_script(const std::string& name) {
  namespace fs = std::filesystem;
  std::vector<fs::path> tries;
  if (const char* f = std::getenv("RF_FIXTURES")) tries.push_back(fs::path(f).parent_path() / name);
  tries.push_back(fs::path("tests") / name);
  tries.push_back(fs::path("..") / "tests" / name);
  for (const auto& p : tries)
    if (fs::exists(p)) return fs::absolute(p);
  FAIL("tests/" << name << " not found (RF_FIXTURES unset and not run from the repo root or build dir)");
  return {};
}

// The first Python 3 that imports NumPy: RF_PYTHON, python3 on PATH, then Debian's /usr/bin/python3
// (a pyenv python3 first on PATH may lack python3-numpy). None: the test fails, it never skips.
inline std::string python_with_numpy() {
  std::vector<std::string> tries;
  if (const char* p = std::getenv("RF_PYTHON")) tries.push_back(p);
  tries.insert(tries.end(), {"python3", "/usr/bin/python3"});
  for (const auto& py : tries)
    if (std::system(fmt::format("{} -c 'import numpy' > /dev/null 2>&1", py).c_str()) == 0) return py;
  FAIL(
      "NumPy is missing for the quantization reference: install python3-numpy (./scripts/setup does) "
      "or set RF_PYTHON to a python3 with numpy");
  return {};
}

// The engine dtypes of a file's tensors as they load with 16-bit kept ("f32", "bf16", "i32", ...).
inline std::set<std::string> file_dtypes(const std::filesystem::path& file) {
  std::set<std::string> out;
  auto f = safetensors::File::open(file.string());
  for (const auto& t : f->header().tensors)
    out.insert(std::string(dtype_name(f->load(t, {.keep_16bit = true}).dtype())));
  return out;
}

}  // namespace rf::test
