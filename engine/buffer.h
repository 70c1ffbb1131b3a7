#pragma once
// Device memory owned by a backend. The front end never dereferences it: only the owning
// backend knows whether it is host memory, a Vulkan sub-allocation, or something else.
#include <cstddef>

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

 private:
  Backend* backend_;
  size_t bytes_;
};

}  // namespace rf
