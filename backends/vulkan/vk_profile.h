#pragma once
// RANKFORGE_PROFILE=1 (or csv:<path>): GPU time per kernel from Vulkan timestamp queries. The stream
// brackets every recorded command with two timestamps in its frame's query pool; the results are read
// when the frame's fence is known complete, and the table prints once, when the runtime goes away or
// at process exit (from an atexit handler that only prints what was already read back).
#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/vulkan/vk_device.h"

namespace rf::vk {

struct ProfileTable;  // vk_profile.cpp: rows keyed by kernel name, printed once

class Profiler {
 public:
  // Null unless RANKFORGE_PROFILE is set (read once per runtime): the stream then pays one branch.
  // `commands_per_frame` is the most commands a frame can record; each takes two queries.
  static std::unique_ptr<Profiler> from_env(Context& ctx, size_t frames, uint32_t commands_per_frame);
  Profiler(Context& ctx, size_t frames, uint32_t commands_per_frame, std::string csv_path);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // At the start of recording frame `frame` into `cb` (the previous results were collected).
  void begin_frame(size_t frame, VkCommandBuffer cb);
  // Around one command named `name` (a shader variant, "copy", "upload", "download").
  void begin(size_t frame, VkCommandBuffer cb, std::string_view name);
  void end(size_t frame, VkCommandBuffer cb);
  // Once the frame's fence has signalled: read its timestamps into the table.
  void collect(size_t frame);
  // Prints the table to stderr (and the CSV) unless it already was; no Vulkan calls.
  void report();

 private:
  struct Frame {
    VkQueryPool pool = VK_NULL_HANDLE;
    std::vector<std::string> names;  // one per begin/end pair recorded, in query order
    bool open = false;               // a begin without its end yet
  };
  Context& ctx_;
  uint32_t capacity_ = 0;  // commands per frame
  bool timed_ = false;     // the queue family has timestamps
  uint64_t mask_ = 0;      // timestampValidBits as a mask
  double ns_per_tick_ = 1;
  std::vector<Frame> frames_;
  std::vector<uint64_t> results_;
  std::shared_ptr<ProfileTable> table_;
};

}  // namespace rf::vk
