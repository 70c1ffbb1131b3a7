#pragma once
// Device memory owned by a backend. The front end never dereferences it: only the owning
// backend knows whether it is host memory, a Vulkan sub-allocation, or something else.
#include <cstddef>
#include <cstdint>

namespace rf {

class Backend;

class Buffer {
 public:
  Buffer(Backend& backend, size_t bytes) : backend_(&backend), bytes_(bytes) {}
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Backend& backend() const { return *backend_; }
  size_t bytes() const { return bytes_; }
  // Bumped by every in-place update through the front end (fill_, copy_, add_, mul_), so a cache
  // keyed by a tensor (autocast's cast memo) can tell that the contents changed.
  uint64_t version() const { return version_; }
  void bump_version() const { ++version_; }

 private:
  Backend* backend_;
  size_t bytes_;
  mutable uint64_t version_ = 0;
};

}  // namespace rf
