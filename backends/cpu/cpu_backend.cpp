#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_dnnl.h"

#include <fmt/format.h>
#include <tbb/task_arena.h>

#include <cstring>
#include <stdexcept>

namespace rf::cpu {

int num_threads() { return tbb::this_task_arena::max_concurrency(); }

std::shared_ptr<Buffer> CpuBackend::alloc(size_t bytes) {
  size_t cap = 0;
  void* p = allocator_get(bytes, &cap);
  return std::make_shared<CpuBuffer>(*this, bytes, p, cap);
}

std::shared_ptr<Buffer> CpuBackend::wrap_host(void* data, size_t bytes, std::shared_ptr<const void> owner) {
  return std::make_shared<CpuBuffer>(*this, bytes, data, std::move(owner));
}

void CpuBackend::upload(Buffer& dst, size_t dst_offset, std::span<const std::byte> src) {
  if (dst_offset + src.size() > dst.bytes())
    throw std::out_of_range(fmt::format("[cpu] upload out of range: {} bytes at offset {} into a {}-byte buffer",
                                        src.size(), dst_offset, dst.bytes()));
  if (!src.empty())
    std::memcpy(static_cast<std::byte*>(static_cast<CpuBuffer&>(dst).data()) + dst_offset, src.data(), src.size());
}

void CpuBackend::download(const Buffer& src, size_t src_offset, std::span<std::byte> dst) {
  if (src_offset + dst.size() > src.bytes())
    throw std::out_of_range(fmt::format("[cpu] download out of range: {} bytes at offset {} from a {}-byte buffer",
                                        dst.size(), src_offset, src.bytes()));
  if (!dst.empty())
    std::memcpy(dst.data(), static_cast<const std::byte*>(static_cast<const CpuBuffer&>(src).data()) + src_offset,
                dst.size());
}

std::unique_ptr<Backend> make_cpu_backend(int) { return std::make_unique<CpuBackend>(); }

namespace {
std::vector<std::string> describe_cpu() {
  const bool dnnl = dnnl_available(), bf16 = dnnl && cpu_has_native_bf16();
  return {fmt::format("cpu: {} threads, f32 GEMMs on {}, native bf16 dot products {} (precision auto = {})",
                      num_threads(), dnnl ? "oneDNN (OpenBLAS below 1 MFLOP)" : "OpenBLAS", bf16 ? "yes" : "no",
                      bf16 ? "bf16" : "f32")};
}
}  // namespace

}  // namespace rf::cpu

namespace rf {
BackendEntry cpu_backend_entry() {
  return {.type = DeviceType::CPU,
          .make = &cpu::make_cpu_backend,
          .summary = cpu::dnnl_available() ? "cpu (oneDNN, OpenBLAS, oneTBB)" : "cpu (OpenBLAS, oneTBB)",
          .describe = &cpu::describe_cpu};
}
}  // namespace rf
