#pragma once
// Running the rankforge binary from tests: exit code, stdout, stderr.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace rf::test {

struct CliRun {
  int rc;
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline std::string cli_path() {
  const char* cli = std::getenv("RF_CLI");
  REQUIRE_MESSAGE(cli != nullptr, "RF_CLI is not set (meson sets it to the rankforge binary)");
  return cli;
}

// `prefix args` through the shell (prefix: the binary, or a launcher line ending with it).
inline CliRun run_cli_with(const std::string& prefix, const std::string& args) {
  static std::atomic<int> n{0};
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path();
  const int k = n++;
  std::string o = (dir / fmt::format("rf_cli_{}_{}.out", ::getpid(), k)).string();
  std::string e = (dir / fmt::format("rf_cli_{}_{}.err", ::getpid(), k)).string();
  int rc = std::system(fmt::format("{} {} > {} 2> {}", prefix, args, o, e).c_str());
  CliRun r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(o), slurp(e)};
  fs::remove(o);
  fs::remove(e);
  return r;
}

inline CliRun run_cli(const std::string& args) { return run_cli_with(cli_path(), args); }

// The lines of s, without their '\n' (a last line without one counts too).
inline std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') out.push_back(s.substr(start, i - start)), start = i + 1;
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

}  // namespace rf::test
