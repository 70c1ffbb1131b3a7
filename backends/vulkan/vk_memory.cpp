// Device memory: 64 MiB blocks, best-fit sub-allocation with coalescing, guard bytes on demand.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backends/vulkan/vk_check.h"
#include "backends/vulkan/vk_runtime.h"

namespace rf::vk {

namespace {
constexpr size_t kBlockBytes = size_t(64) << 20;
constexpr size_t kAlign = 256;  // >= every device's minStorageBufferOffsetAlignment in practice
constexpr std::byte kSentinel{0xCD};
size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

VkBuffer make_buffer(VkDevice dev, size_t bytes) {
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = bytes;
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkBuffer b = VK_NULL_HANDLE;
  RF_VK_CHECK(vkCreateBuffer(dev, &bi, nullptr, &b));
  return b;
}
}  // namespace

Allocator::Allocator(Context& ctx) : ctx_(ctx) {
  // Pick the memory type once: device-local and mappable when that heap is the big one (lavapipe,
  // ReBAR GPUs); otherwise plain device-local and transfers go through the staging ring.
  VkBuffer probe = make_buffer(ctx.device(), 4096);
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(ctx.device(), probe, &req);
  vkDestroyBuffer(ctx.device(), probe, nullptr);
  const auto& mp = ctx.memory_properties();
  const VkMemoryPropertyFlags local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int mapped = ctx.memory_type(req.memoryTypeBits, local | host);
  int plain = ctx.memory_type(req.memoryTypeBits, local);
  auto heap_size = [&](int t) { return t < 0 ? 0 : mp.memoryHeaps[mp.memoryTypes[t].heapIndex].size; };
  if (mapped >= 0 && heap_size(mapped) >= heap_size(plain)) {
    type_ = mapped;
    mapped_ = true;
  } else if (plain >= 0) {
    type_ = plain;
  } else {
    type_ = ctx.memory_type(req.memoryTypeBits, host);  // no device-local memory at all
    mapped_ = true;
  }
  if (type_ < 0) throw std::runtime_error(fmt::format("[vulkan] {} offers no usable memory type", ctx.info().name));
  stats_.budget = heap_size(type_);
}

Allocator::~Allocator() {
  if (process_exiting()) return;
  for (auto& b : blocks_) {
    if (b->mapped) vkUnmapMemory(ctx_.device(), b->memory);
    vkDestroyBuffer(ctx_.device(), b->buffer, nullptr);
    vkFreeMemory(ctx_.device(), b->memory, nullptr);
  }
}

Block* Allocator::new_block(size_t bytes) {
  auto b = std::make_unique<Block>();
  b->size = bytes;
  b->buffer = make_buffer(ctx_.device(), bytes);
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(ctx_.device(), b->buffer, &req);
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = uint32_t(type_);
  VkResult r = vkAllocateMemory(ctx_.device(), &ai, nullptr, &b->memory);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(ctx_.device(), b->buffer, nullptr);
    throw std::runtime_error(
        fmt::format("[vulkan] out of device memory on {}: asked for {} bytes with {} in use of a {}-byte budget ({})",
                    ctx_.info().name, bytes, stats_.in_use, stats_.budget, result_name(r)));
  }
  RF_VK_CHECK(vkBindBufferMemory(ctx_.device(), b->buffer, b->memory, 0));
  if (mapped_) {
    void* p = nullptr;
    RF_VK_CHECK(vkMapMemory(ctx_.device(), b->memory, 0, VK_WHOLE_SIZE, 0, &p));
    b->mapped = static_cast<std::byte*>(p);
  }
  b->free_list[0] = bytes;
  stats_.block_bytes += bytes;
  stats_.blocks++;
  blocks_.push_back(std::move(b));
  return blocks_.back().get();
}

Allocation Allocator::allocate(size_t bytes) {
  std::lock_guard lock(mu_);
  const size_t guard = guard_ && mapped_ ? kGuard : 0;
  const size_t need = round_up(std::max<size_t>(bytes, 4) + 2 * guard, kAlign);
  Block* best = nullptr;
  std::map<size_t, size_t>::iterator best_it;
  for (auto& b : blocks_)
    for (auto it = b->free_list.begin(); it != b->free_list.end(); ++it)
      if (it->second >= need && (!best || it->second < best_it->second)) {
        best = b.get();
        best_it = it;
      }
  if (!best) {
    if (stats_.budget && stats_.in_use + need > stats_.budget)
      throw std::runtime_error(fmt::format("[vulkan] out of device memory on {}: asked for {} bytes, {} of {} in use",
                                           ctx_.info().name, bytes, stats_.in_use, stats_.budget));
    best = new_block(std::max(need, kBlockBytes));
    best_it = best->free_list.begin();
  }
  Allocation a{best, best_it->first, need, best_it->first + guard, bytes};
  size_t rest = best_it->second - need;
  best->free_list.erase(best_it);
  if (rest) best->free_list[a.offset + need] = rest;
  stats_.in_use += need;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  stats_.allocs++;
  if (guard) {
    std::memset(best->mapped + a.offset, int(kSentinel), guard);
    std::memset(best->mapped + a.user_offset + bytes, int(kSentinel), a.offset + need - a.user_offset - bytes);
  }
  return a;
}

void Allocator::release(const Allocation& a) {
  std::lock_guard lock(mu_);
  if (a.user_offset != a.offset) {  // guarded: both pads must still hold the sentinel
    const std::byte* p = a.block->mapped;
    bool ok = true;
    for (size_t i = a.offset; i < a.user_offset && ok; ++i) ok = p[i] == kSentinel;
    for (size_t i = a.user_offset + a.bytes; i < a.offset + a.size && ok; ++i) ok = p[i] == kSentinel;
    if (!ok) stats_.guard_violations++;
  }
  auto& fl = a.block->free_list;
  auto [it, inserted] = fl.emplace(a.offset, a.size);
  if (!inserted) return;  // double free: keep the list sane
  auto next = std::next(it);
  if (next != fl.end() && it->first + it->second == next->first) {
    it->second += next->second;
    fl.erase(next);
  }
  if (it != fl.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      fl.erase(it);
    }
  }
  stats_.in_use -= a.size;
}

MemoryStats Allocator::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace rf::vk
