// RANKFORGE_PROFILE on the Vulkan backend (backends/vulkan/vk_profile.cpp): the CLI prints a per-kernel
// table of GPU time from timestamp queries to stderr, once; csv:<path> writes it as CSV too; without the
// variable nothing is printed. On CI this runs on lavapipe, which has compute timestamps.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backends/vulkan/vk_device.h"
#include "tests/cli_util.h"

namespace fs = std::filesystem;

namespace rf::test {
namespace {

bool have_vulkan() {
  if (!vk::list_devices().empty()) return true;
  MESSAGE("skipping: no Vulkan device (install mesa-vulkan-drivers for lavapipe)");
  return false;
}

const char* kBench = "bench matmul --device vulkan --m 64 --n 64 --k 64 --iters 2 --warmup 1";

struct Row {
  std::string kernel;
  long calls = 0;
  double total_ms = 0, mean_us = 0, share = 0;
};

struct Table {
  int headers = 0;  // "[profile] vulkan <device>: ..." lines seen
  long dispatches = 0;
  double total_ms = 0;
  std::vector<Row> rows;
};

// The header `[profile] vulkan <device>: <N> dispatches, <T> ms GPU time`, the column line, then
// one line per kernel until a line that is not a row.
Table parse(const std::string& err) {
  Table t;
  std::vector<std::string> lines = lines_of(err);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.rfind("[profile] vulkan ", 0) != 0) continue;
    t.headers++;
    const size_t colon = l.rfind(": ");
    REQUIRE(colon != std::string::npos);
    std::istringstream h(l.substr(colon + 2));
    std::string word1, word2;
    h >> t.dispatches >> word1 >> t.total_ms >> word2;
    CHECK(word1 == "dispatches,");
    CHECK(word2 == "ms");
    REQUIRE(i + 1 < lines.size());
    std::istringstream cols(lines[i + 1]);
    std::string c[5];
    cols >> c[0] >> c[1] >> c[2] >> c[3] >> c[4];
    CHECK(c[0] == "kernel");
    CHECK(c[1] == "calls");
    CHECK(c[2] == "total_ms");
    CHECK(c[3] == "mean_us");
    CHECK(c[4] == "share%");
    for (size_t j = i + 2; j < lines.size(); ++j) {
      Row r;
      std::istringstream in(lines[j]);
      if (!(in >> r.kernel >> r.calls >> r.total_ms >> r.mean_us >> r.share) || r.kernel.rfind('[', 0) == 0) break;
      t.rows.push_back(r);
    }
  }
  return t;
}

}  // namespace

TEST_SUITE("vulkan") {
  TEST_CASE("RANKFORGE_PROFILE=1 prints one per-kernel GPU time table for a Vulkan run") {
    if (!have_vulkan()) return;
    ScopedEnv allow("RANKFORGE_VULKAN_ALLOW_CPU", "1");
    ScopedEnv prof("RANKFORGE_PROFILE", "1");
    CliRun r = run_cli(kBench);
    INFO(r.err);
    REQUIRE(r.rc == 0);
    REQUIRE(r.err.find("this device has no compute timestamps") == std::string::npos);  // lavapipe has them
    Table t = parse(r.err);
    CHECK(t.headers == 1);  // printed once, not again by a later teardown
    REQUIRE(!t.rows.empty());
    const Row* mm = nullptr;
    long calls = 0;
    double total = 0, share = 0;
    for (size_t i = 0; i < t.rows.size(); ++i) {
      const Row& row = t.rows[i];
      if (row.kernel.rfind("matmul", 0) == 0 && !mm) mm = &row;
      calls += row.calls;
      total += row.total_ms;
      share += row.share;
      CHECK(row.calls >= 1);
      CHECK(row.mean_us == doctest::Approx(row.total_ms * 1e3 / double(row.calls)).epsilon(0.01));
      if (i > 0) CHECK(row.total_ms <= t.rows[i - 1].total_ms);  // sorted by total time
    }
    REQUIRE_MESSAGE(mm != nullptr, "no matmul row");
    CHECK(mm->calls >= 3);  // one warmup + two timed rounds, 10 matmuls each on this bench
    CHECK(mm->total_ms > 0);
    CHECK(t.dispatches == calls);
    CHECK(t.total_ms == doctest::Approx(total).epsilon(0.01));
    CHECK(t.total_ms > 0);
    CHECK(share == doctest::Approx(100).epsilon(0.02));
  }

  TEST_CASE("without RANKFORGE_PROFILE (or with 0) no profile table is printed") {
    if (!have_vulkan()) return;
    ScopedEnv allow("RANKFORGE_VULKAN_ALLOW_CPU", "1");
    for (const char* v : {static_cast<const char*>(nullptr), "0"}) {
      ScopedEnv prof("RANKFORGE_PROFILE", v);
      CliRun r = run_cli(kBench);
      INFO(r.err);
      CHECK(r.rc == 0);
      CHECK(r.out.find("bench=matmul") != std::string::npos);
      CHECK(r.err.find("[profile]") == std::string::npos);
      CHECK(r.out.find("[profile]") == std::string::npos);
    }
  }

  TEST_CASE("RANKFORGE_PROFILE=csv:<path> writes the table as CSV, whole") {
    if (!have_vulkan()) return;
    const fs::path dir = fs::temp_directory_path() / fmt::format("rf_vk_profile_{}", ::getpid());
    fs::create_directories(dir);
    const fs::path csv = dir / "profile.csv";
    {
      ScopedEnv allow("RANKFORGE_VULKAN_ALLOW_CPU", "1");
      ScopedEnv prof("RANKFORGE_PROFILE", ("csv:" + csv.string()).c_str());
      CliRun r = run_cli(kBench);
      INFO(r.err);
      REQUIRE(r.rc == 0);
      CHECK(parse(r.err).headers == 1);  // the stderr table as well
    }
    REQUIRE(fs::exists(csv));
    std::vector<std::string> lines = lines_of(slurp(csv));
    REQUIRE(lines.size() >= 2);
    CHECK(lines[0] == "kernel,calls,total_ms,mean_us,min_us,max_us,share_pct");
    bool matmul = false;
    for (size_t i = 1; i < lines.size(); ++i) {
      std::vector<std::string> f;
      std::stringstream in(lines[i]);
      for (std::string cell; std::getline(in, cell, ',');) f.push_back(cell);
      REQUIRE(f.size() == 7);
      const double total = std::stod(f[2]), mn = std::stod(f[4]), mx = std::stod(f[5]), mean = std::stod(f[3]);
      CHECK(std::stol(f[1]) >= 1);
      CHECK(mn <= mean * 1.0001 + 1e-3);
      CHECK(mean <= mx * 1.0001 + 1e-3);
      if (f[0].rfind("matmul", 0) == 0) matmul = matmul || total > 0;
    }
    CHECK(matmul);
    size_t entries = 0;
    for (const auto& e : fs::directory_iterator(dir)) entries++, (void)e;
    CHECK(entries == 1);  // the temporary file was renamed, not left behind
    fs::remove_all(dir);
  }
}

}  // namespace rf::test
