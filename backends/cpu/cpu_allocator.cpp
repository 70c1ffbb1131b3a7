// Size-bucketed caching allocator: a training step reuses the blocks of the previous step.
#include <fmt/format.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <vector>

#include "backends/cpu/cpu_backend.h"

namespace rf::cpu {

namespace {
constexpr size_t kAlign = 64;

// Buckets: 64-byte steps up to 4 KiB, then 8 classes per power of two (<= 12.5% waste).
size_t bucket_size(size_t bytes) {
  if (bytes <= 4096) return std::max<size_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  size_t p = size_t(1) << (63 - __builtin_clzll(bytes));  // largest power of two <= bytes
  size_t step = p / 8;
  return (bytes + step - 1) / step * step;
}

struct Cache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // capacity -> blocks
  AllocatorStats stats;
};
Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: buffers may outlive static destructors
  return *c;
}

void release_all(Cache& c) {
  for (auto& [cap, blocks] : c.free_blocks)
    for (void* p : blocks) std::free(p);
  c.free_blocks.clear();
  c.stats.bytes_cached = 0;
}
}  // namespace

void* allocator_get(size_t bytes, size_t* capacity) {
  size_t cap = bucket_size(bytes);
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  ++c.stats.allocs;
  auto it = c.free_blocks.find(cap);
  void* p = nullptr;
  if (it != c.free_blocks.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    ++c.stats.cache_hits;
    c.stats.bytes_cached -= cap;
  } else {
    p = std::aligned_alloc(kAlign, cap);
    if (!p) {  // give the cache back to the system and try once more
      release_all(c);
      p = std::aligned_alloc(kAlign, cap);
    }
    if (!p) throw std::runtime_error(fmt::format("[cpu] out of memory allocating {} bytes", bytes));
    ++c.stats.system_allocs;
  }
  c.stats.bytes_in_use += cap;
  c.stats.peak_bytes_in_use = std::max(c.stats.peak_bytes_in_use, c.stats.bytes_in_use);
  *capacity = cap;
  return p;
}

void allocator_put(void* p, size_t capacity) {
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  ++c.stats.frees;
  c.stats.bytes_in_use -= capacity;
  c.stats.bytes_cached += capacity;
  c.free_blocks[capacity].push_back(p);
}

AllocatorStats allocator_stats() {
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  return c.stats;
}

void allocator_empty_cache() {
  Cache& c = cache();
  std::lock_guard lock(c.mu);
  release_all(c);
}

CpuBuffer::~CpuBuffer() {
  if (!owner_) allocator_put(data_, capacity_);
}

}  // namespace rf::cpu
