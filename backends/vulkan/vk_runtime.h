#pragma once
// The Vulkan runtime under the backend: sub-allocated device memory, a staging ring, cached
// pipelines and a stream that records many dispatches per command buffer, puts barriers only
// between dependent dispatches, and makes the host wait only when it reads.
#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/vulkan/vk_device.h"

namespace rf::vk {

// One VkDeviceMemory with one VkBuffer over all of it; tensors live at offsets inside.
struct Block {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  size_t size = 0;
  std::byte* mapped = nullptr;         // non-null when the memory is host-visible (direct access)
  std::map<size_t, size_t> free_list;  // offset -> size, coalesced
};

struct Allocation {
  Block* block = nullptr;
  size_t offset = 0, size = 0;  // size as reserved (rounded up, guard bytes included)
  size_t user_offset = 0;       // where the caller's bytes start (after the front guard)
  size_t bytes = 0;             // what the caller asked for
};

struct MemoryStats {
  size_t block_bytes = 0, in_use = 0, peak_in_use = 0, budget = 0;
  uint64_t allocs = 0, blocks = 0, guard_violations = 0;
};

// Best-fit sub-allocation from 64 MiB blocks (a dedicated block for anything larger). Freed
// ranges are reused at once: the stream orders reuse on the GPU (see Stream::dispatch).
class Allocator {
 public:
  explicit Allocator(Context& ctx);
  ~Allocator();
  Allocation allocate(size_t bytes);
  void release(const Allocation& a);
  bool device_memory_mapped() const { return mapped_; }
  MemoryStats stats() const;
  // Guard mode pads every allocation with sentinel bytes on both sides and checks them on release
  // (the Vulkan parity tests turn it on to catch out-of-bounds writes).
  void set_guard(bool on) { guard_ = on; }
  static constexpr size_t kGuard = 256;

 private:
  Block* new_block(size_t bytes);
  Context& ctx_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Block>> blocks_;
  int type_ = -1;
  bool mapped_ = false, guard_ = false;
  MemoryStats stats_;
};

struct Pipeline {
  std::string name;  // the shader variant, the row it gets under RANKFORGE_PROFILE
  VkPipeline pipeline = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkShaderModule module = VK_NULL_HANDLE;
  uint32_t bindings = 0, push_bytes = 0;
};

class Profiler;  // vk_profile.h

// A buffer range a dispatch reads or writes.
struct Binding {
  VkBuffer buffer = VK_NULL_HANDLE;
  size_t offset = 0, range = 0;
  bool write = false;
};

class Stream {
 public:
  Stream(Context& ctx, Allocator& mem);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Created on first use and kept; `shader` names an embedded SPIR-V variant.
  Pipeline& pipeline(std::string_view shader, uint32_t bindings, uint32_t push_bytes);
  void dispatch(Pipeline& p, std::span<const Binding> b, const void* push, uint32_t gx, uint32_t gy = 1,
                uint32_t gz = 1);
  // Host <-> device transfers for allocations in device memory.
  void upload(const Allocation& dst, size_t offset, std::span<const std::byte> src);
  void download(const Allocation& src, size_t offset, std::span<std::byte> dst);
  // Records one device-to-device vkCmdCopyBuffer (ordered after what touched either range); wait() waits for it.
  void copy(VkBuffer src, size_t src_offset, VkBuffer dst, size_t dst_offset, size_t bytes);
  void flush();  // submit what is recorded, do not wait
  void wait();   // flush and wait for everything submitted
  uint64_t dispatches() const { return dispatches_; }
  uint64_t submits() const { return submits_; }
  uint64_t barriers() const { return barriers_; }

 private:
  struct Frame {
    VkCommandBuffer cb = VK_NULL_HANDLE;
    VkFence fence = VK_NULL_HANDLE;
    std::vector<VkDescriptorPool> pools;
    size_t pool_at = 0;
    bool recording = false, in_flight = false;
  };
  struct Range {
    VkBuffer buffer;
    size_t lo, hi;
    bool write;
  };
  void begin_if_needed();
  void hazard_barrier(std::span<const Binding> b);
  VkDescriptorSet descriptor_set(Frame& f, Pipeline& p);
  size_t stage(size_t bytes);  // offset in the staging ring (waits when full)

  Context& ctx_;
  Allocator& mem_;
  std::unordered_map<std::string, std::unique_ptr<Pipeline>> pipelines_;
  std::vector<Frame> frames_;
  size_t cur_ = 0;
  uint32_t recorded_ = 0;
  std::vector<Range> pending_;  // ranges touched since the last barrier
  // Staging ring: host-visible, for devices whose device-local memory is not mappable.
  VkBuffer staging_ = VK_NULL_HANDLE;
  VkDeviceMemory staging_mem_ = VK_NULL_HANDLE;
  std::byte* staging_map_ = nullptr;
  size_t staging_size_ = 0, staging_head_ = 0;
  uint64_t dispatches_ = 0, submits_ = 0, barriers_ = 0;
  std::unique_ptr<Profiler> prof_;  // null unless RANKFORGE_PROFILE is set
};

}  // namespace rf::vk
