#include "backends/vulkan/vk_profile.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>

#include "backends/vulkan/vk_check.h"

namespace rf::vk {

struct ProfileRow {
  uint64_t calls = 0;
  double total_ns = 0, min_ns = 0, max_ns = 0;
};

struct ProfileTable {
  std::mutex mu;
  std::string device, csv_path;
  bool timed = false, printed = false;
  std::map<std::string, ProfileRow, std::less<>> rows;
  uint64_t in_flight = 0;  // recorded, not yet read back
  uint64_t untimed = 0;    // a full query pool or a failed read
};

namespace {
// Tables of live profilers, for the exit handler. Leaked on purpose: it is used from atexit and
// from destructors of statics, in whatever order those run.
struct Registry {
  std::mutex mu;
  std::vector<std::shared_ptr<ProfileTable>> tables;
};
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

void print_table(ProfileTable& t);

// Destructors after main leave the Vulkan runtime alone (process_exiting), so the table of a runtime
// held by a static prints from here, with what the last fence wait read back.
void print_all_at_exit() {
  std::lock_guard lock(registry().mu);
  for (auto& t : registry().tables) print_table(*t);
}

struct Sorted {
  std::string_view name;
  const ProfileRow* row;
};

void write_csv(const ProfileTable& t, const std::vector<Sorted>& rows, double total_ns) {
  // Written beside the target and renamed, so a reader never sees half a table.
  const std::string tmp = fmt::format("{}.tmp{}", t.csv_path, ::getpid());
  {
    std::ofstream out(tmp);
    out << "kernel,calls,total_ms,mean_us,min_us,max_us,share_pct\n";
    for (const Sorted& s : rows) {
      const ProfileRow& r = *s.row;
      out << fmt::format("{},{},{:.6f},{:.3f},{:.3f},{:.3f},{:.2f}\n", s.name, r.calls, r.total_ns / 1e6,
                         r.total_ns / double(r.calls) / 1e3, r.min_ns / 1e3, r.max_ns / 1e3,
                         total_ns > 0 ? 100 * r.total_ns / total_ns : 0.0);
    }
    if (!out.flush()) {
      fmt::print(stderr, "[vulkan] cannot write the profile CSV {}\n", tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, t.csv_path, ec);
  if (ec) fmt::print(stderr, "[vulkan] cannot rename {} to {}: {}\n", tmp, t.csv_path, ec.message());
}

void print_table(ProfileTable& t) {
  std::lock_guard lock(t.mu);
  if (t.printed) return;
  t.printed = true;
  if (!t.timed) {
    fmt::print(stderr, "[profile] vulkan: this device has no compute timestamps\n");
    return;
  }
  std::vector<Sorted> rows;
  uint64_t calls = 0;
  double total_ns = 0;
  size_t width = 6;  // "kernel"
  for (const auto& [name, r] : t.rows) {
    rows.push_back({name, &r});
    calls += r.calls;
    total_ns += r.total_ns;
    width = std::max(width, name.size());
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const Sorted& a, const Sorted& b) { return a.row->total_ns > b.row->total_ns; });
  std::string out =
      fmt::format("[profile] vulkan {}: {} dispatches, {:.3f} ms GPU time\n", t.device, calls, total_ns / 1e6);
  out += fmt::format("  {:<{}}  {:>8}  {:>10}  {:>10}  {:>6}\n", "kernel", width, "calls", "total_ms", "mean_us",
                     "share%");
  for (const Sorted& s : rows)
    out += fmt::format("  {:<{}}  {:>8}  {:>10.3f}  {:>10.1f}  {:>6.1f}\n", s.name, width, s.row->calls,
                       s.row->total_ns / 1e6, s.row->total_ns / double(s.row->calls) / 1e3,
                       total_ns > 0 ? 100 * s.row->total_ns / total_ns : 0.0);
  if (t.in_flight || t.untimed)
    out += fmt::format("[profile] vulkan: {} commands not timed ({} still in flight at the end)\n",
                       t.in_flight + t.untimed, t.in_flight);
  std::fputs(out.c_str(), stderr);
  std::fflush(stderr);
  if (!t.csv_path.empty()) write_csv(t, rows, total_ns);
}
}  // namespace

std::unique_ptr<Profiler> Profiler::from_env(Context& ctx, size_t frames, uint32_t commands_per_frame) {
  const char* env = std::getenv("RANKFORGE_PROFILE");
  if (!env || !*env || std::string_view(env) == "0") return nullptr;
  std::string_view v(env);
  std::string csv = v.starts_with("csv:") ? std::string(v.substr(4)) : std::string();
  if (v.starts_with("csv:") && csv.empty())
    throw std::invalid_argument("[vulkan] RANKFORGE_PROFILE=csv:<path> needs a path");
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(print_all_at_exit); });
  return std::make_unique<Profiler>(ctx, frames, commands_per_frame, std::move(csv));
}

Profiler::Profiler(Context& ctx, size_t frames, uint32_t commands_per_frame, std::string csv_path)
    : ctx_(ctx), capacity_(commands_per_frame), frames_(frames), table_(std::make_shared<ProfileTable>()) {
  table_->device = ctx.info().name;
  table_->csv_path = std::move(csv_path);
  // The queue family's timestampValidBits is what decides (0: no timestamps on this queue);
  // timestampComputeAndGraphics only promises them on every graphics/compute family at once.
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(ctx.physical(), &nq, nullptr);
  std::vector<VkQueueFamilyProperties> qf(nq);
  vkGetPhysicalDeviceQueueFamilyProperties(ctx.physical(), &nq, qf.data());
  const uint32_t bits = ctx.queue_family() < nq ? qf[ctx.queue_family()].timestampValidBits : 0;
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(ctx.physical(), &props);
  timed_ = bits > 0 && props.limits.timestampPeriod > 0;
  mask_ = bits >= 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
  ns_per_tick_ = props.limits.timestampPeriod;
  table_->timed = timed_;
  if (timed_) {
    for (Frame& f : frames_) {
      VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
      qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
      qi.queryCount = 2 * capacity_;
      RF_VK_CHECK(vkCreateQueryPool(ctx.device(), &qi, nullptr, &f.pool));
      f.names.reserve(capacity_);
    }
    results_.resize(2 * size_t(capacity_));
  }
  std::lock_guard lock(registry().mu);
  registry().tables.push_back(table_);
}

Profiler::~Profiler() {
  if (!process_exiting())  // after main the driver may be gone (vk_device.h)
    for (Frame& f : frames_)
      if (f.pool) vkDestroyQueryPool(ctx_.device(), f.pool, nullptr);
  report();
  std::lock_guard lock(registry().mu);
  std::erase(registry().tables, table_);
}

void Profiler::report() { print_table(*table_); }

void Profiler::begin_frame(size_t frame, VkCommandBuffer cb) {
  if (!timed_) return;
  Frame& f = frames_[frame];
  if (!f.names.empty()) {  // never submitted and waited on: those commands go untimed
    std::lock_guard lock(table_->mu);
    table_->in_flight -= f.names.size();
    table_->untimed += f.names.size();
    f.names.clear();
  }
  f.open = false;
  vkCmdResetQueryPool(cb, f.pool, 0, 2 * capacity_);
}

void Profiler::begin(size_t frame, VkCommandBuffer cb, std::string_view name) {
  if (!timed_) return;
  Frame& f = frames_[frame];
  if (f.names.size() >= capacity_) {  // cannot happen with the stream's flush cap; never overflow the pool
    std::lock_guard lock(table_->mu);
    table_->untimed++;
    return;
  }
  vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, f.pool, uint32_t(2 * f.names.size()));
  f.names.emplace_back(name);
  f.open = true;
}

void Profiler::end(size_t frame, VkCommandBuffer cb) {
  Frame& f = frames_[frame];
  if (!f.open) return;
  vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, f.pool, uint32_t(2 * f.names.size() - 1));
  f.open = false;
  std::lock_guard lock(table_->mu);
  table_->in_flight++;
}

void Profiler::collect(size_t frame) {
  if (!timed_) return;
  Frame& f = frames_[frame];
  const size_t n = f.names.size() - (f.open ? 1 : 0);  // an open pair has no end timestamp
  if (n == 0) return;
  const VkResult r =
      vkGetQueryPoolResults(ctx_.device(), f.pool, 0, uint32_t(2 * n), 2 * n * sizeof(uint64_t), results_.data(),
                            sizeof(uint64_t), VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
  std::lock_guard lock(table_->mu);
  table_->in_flight -= n;
  if (r != VK_SUCCESS) {
    table_->untimed += n;
    f.names.erase(f.names.begin(), f.names.begin() + ptrdiff_t(n));
    return;
  }
  // Commands without a barrier between them overlap on the GPU, so each is charged from its own start
  // or the previous command's end, whichever is later: the rows then add up to the frame's busy time
  // instead of counting overlapped stretches twice. Tick differences wrap at timestampValidBits.
  const uint64_t half = mask_ / 2;
  uint64_t prev_end = results_[0] & mask_;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t b = results_[2 * i] & mask_, e = results_[2 * i + 1] & mask_;
    const uint64_t start = ((prev_end - b) & mask_) <= half ? prev_end : b;
    const uint64_t ticks = ((e - start) & mask_) <= half ? (e - start) & mask_ : 0;
    prev_end = e;
    const double ns = double(ticks) * ns_per_tick_;
    auto it = table_->rows.find(f.names[i]);
    if (it == table_->rows.end()) it = table_->rows.emplace(f.names[i], ProfileRow{0, 0, ns, ns}).first;
    ProfileRow& row = it->second;
    row.calls++;
    row.total_ns += ns;
    row.min_ns = std::min(row.min_ns, ns);
    row.max_ns = std::max(row.max_ns, ns);
  }
  f.names.erase(f.names.begin(), f.names.begin() + ptrdiff_t(n));
}

}  // namespace rf::vk
