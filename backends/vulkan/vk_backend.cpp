// VulkanBackend: memory, transfers, synchronisation and the helpers every op file uses.
#include "backends/vulkan/vk_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backends/vulkan/vk_shaders.h"

namespace rf::vk {

VulkanBuffer::VulkanBuffer(Backend& b, std::shared_ptr<Runtime> rt, size_t bytes)
    : Buffer(b, bytes), rt_(std::move(rt)), a_(rt_->mem.allocate(bytes)) {}

VulkanBuffer::~VulkanBuffer() {
  if (process_exiting()) return;
  try {
    // Guard checks read the pads, so pending writes must land first (tests only: it serialises).
    if (a_.user_offset != a_.offset) rt_->stream.wait();
  } catch (...) {  // a lost device: the memory goes back to the pool regardless
  }
  rt_->mem.release(a_);
}

void need_f32(const Tensor& t, const char* op) {
  if (t.dtype() != DType::F32)
    throw std::invalid_argument(
        fmt::format("[{}] dtype {} is not supported on Vulkan (kernels compute in f32; f16/bf16 "
                    "are storage types converted by copy)",
                    op, dtype_name(t.dtype())));
}

uint32_t to_u32(int64_t v, const char* what) {
  if (v < 0 || v > int64_t(UINT32_MAX))
    throw std::invalid_argument(fmt::format("[vulkan] {} {} exceeds 32 bits", what, v));
  return uint32_t(v);
}

Collapsed collapse(const Shape& shape, std::initializer_list<const Strides*> strides) {
  Collapsed c;
  const size_t nops = strides.size();
  std::vector<int64_t> sh;
  std::vector<std::vector<int64_t>> st(nops);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !sh.empty();
    size_t k = 0;
    for (const Strides* s : strides) {
      // The previous kept dim merges with d when it steps exactly over d for every operand.
      if (merge && st[k].back() != (*s)[d] * shape[d]) merge = false;
      ++k;
    }
    if (merge) {
      sh.back() *= shape[d];
      k = 0;
      for (const Strides* s : strides) st[k++].back() = (*s)[d];
    } else {
      sh.push_back(shape[d]);
      k = 0;
      for (const Strides* s : strides) st[k++].push_back((*s)[d]);
    }
  }
  if (sh.size() > 6)
    throw std::invalid_argument(fmt::format("[vulkan] {} has more than 6 non-mergeable dims", shape_str(shape)));
  c.ndim = int(sh.size());
  for (size_t d = 0; d < sh.size(); ++d) {
    if (sh[d] > int64_t(UINT32_MAX)) throw std::invalid_argument("[vulkan] dimension too large for 32-bit indexing");
    c.shape[d] = uint32_t(sh[d]);
    for (size_t k = 0; k < nops; ++k) c.strides[k][d] = uint32_t(st[k][d]);
  }
  return c;
}

VulkanBackend::VulkanBackend(int index) : rt_(std::make_shared<Runtime>(index)), index_(index) {
  const DeviceInfo& info = rt_->ctx.info();
  name_ = fmt::format("vulkan:{} ({})", index, info.name);
  if (!info.storage8 || !info.storage16)
    throw std::runtime_error(
        fmt::format("[vulkan] {} lacks 8/16-bit storage buffer access, which rankforge needs", info.name));
  // Subgroup kernels assume subgroups fill the 256-wide workgroups (true of every real device).
  subgroup_ = info.subgroup_arithmetic && info.subgroup_size >= 4 && shaders::has("reduce_SUM_sg");
  err_ = alloc(4);
  uint32_t zero = 0;
  upload(*err_, 0, std::as_bytes(std::span(&zero, 1)));
}

VulkanBackend::~VulkanBackend() {
  if (process_exiting()) return;
  try {
    rt_->stream.wait();
  } catch (...) {}
}

void VulkanBackend::set_guard(bool on) {
  rt_->stream.wait();
  rt_->mem.set_guard(on);
  rt_->guard = on;
}

std::shared_ptr<Buffer> VulkanBackend::alloc(size_t bytes) {
  if (rt_->guard) rt_->stream.wait();  // guard bytes are written by the host
  return std::make_shared<VulkanBuffer>(*this, rt_, bytes);
}

void VulkanBackend::upload(Buffer& dst, size_t off, std::span<const std::byte> src) {
  if (off + src.size() > dst.bytes())
    throw std::out_of_range(
        fmt::format("[vulkan] upload of {} bytes at offset {} into a {}-byte buffer", src.size(), off, dst.bytes()));
  if (!src.empty()) rt_->stream.upload(static_cast<VulkanBuffer&>(dst).allocation(), off, src);
}

void VulkanBackend::download(const Buffer& src, size_t off, std::span<std::byte> dst) {
  if (off + dst.size() > src.bytes())
    throw std::out_of_range(
        fmt::format("[vulkan] download of {} bytes at offset {} from a {}-byte buffer", dst.size(), off, src.bytes()));
  rt_->stream.download(static_cast<const VulkanBuffer&>(src).allocation(), off, dst);
  check_errors();
}

void VulkanBackend::synchronize() {
  rt_->stream.wait();
  check_errors();
}

Backend::Ceiling VulkanBackend::copy_ceiling(const Tensor& src, Tensor& dst, bool) {
  if (&src.backend() != this || &dst.backend() != this || !src.is_contiguous() || !dst.is_contiguous() ||
      src.dtype() != dst.dtype() || src.numel() != dst.numel())
    throw std::invalid_argument(
        fmt::format("[bench] copy ceiling: needs contiguous tensors of one dtype and size on {}", name_));
  const size_t es = dtype_size(src.dtype()), bytes = size_t(src.numel()) * es;
  const Allocation &s = static_cast<const VulkanBuffer&>(src.buffer()).allocation(),
                   &d = static_cast<const VulkanBuffer&>(dst.buffer()).allocation();
  const size_t so = s.user_offset + size_t(src.offset()) * es, doff = d.user_offset + size_t(dst.offset()) * es;
  Ceiling c;
  c.name = "vkCmdCopyBuffer";
  c.run = [rt = rt_, keep_src = src.buffer_ptr(), keep_dst = dst.buffer_ptr(), sb = s.block->buffer,
           db = d.block->buffer, so, doff, bytes] { rt->stream.copy(sb, so, db, doff, bytes); };
  return c;
}

void VulkanBackend::check_errors() {
  if (!err_pending_) return;
  err_pending_ = false;
  uint32_t flag = 0;
  rt_->stream.download(static_cast<const VulkanBuffer&>(*err_).allocation(), 0,
                       std::as_writable_bytes(std::span(&flag, 1)));
  if (flag) {
    uint32_t zero = 0;
    rt_->stream.upload(static_cast<const VulkanBuffer&>(*err_).allocation(), 0, std::as_bytes(std::span(&zero, 1)));
    throw std::out_of_range(
        "[vulkan] an index or target was out of range in a kernel since the last sync "
        "(index_select/embedding/gather/scatter_add/cross_entropy/spmm/sddmm/csr_add_dense)");
  }
}

Arg VulkanBackend::arg(const Tensor& t, bool write) const {
  if (&t.backend() != this)
    throw std::invalid_argument(fmt::format("[vulkan] a tensor on {} was passed to {}", t.backend().name(), name_));
  const Allocation& a = static_cast<const VulkanBuffer&>(t.buffer()).allocation();
  const size_t es = dtype_size(t.dtype());
  int64_t hi = t.offset() + 1;
  for (size_t d = 0; d < t.shape().size(); ++d) hi += (t.shape()[d] - 1) * t.strides()[d];
  if (t.numel() == 0) hi = t.offset();
  const size_t start = a.user_offset + size_t(t.offset()) * es, end = a.user_offset + size_t(hi) * es;
  const size_t align = std::max<size_t>(rt_->ctx.info().min_storage_align, 16);
  const size_t bind = start / align * align;
  size_t range = std::max<size_t>((end - bind + 3) / 4 * 4, 4);
  range = std::min(range, a.block->size - bind);
  return {{a.block->buffer, bind, range, write}, uint32_t((start - bind) / es)};
}

Arg VulkanBackend::err_arg() const {
  err_pending_ = true;
  const Allocation& a = static_cast<const VulkanBuffer&>(*err_).allocation();
  return {{a.block->buffer, a.user_offset, 4, true}, 0};
}

void VulkanBackend::run_raw(std::string_view name, std::initializer_list<Arg> args, const void* push, size_t push_bytes,
                            uint32_t gx, uint32_t gy, uint32_t gz) {
  Pipeline& p = rt_->stream.pipeline(name, uint32_t(args.size()), uint32_t(push_bytes));
  Binding bs[12];
  size_t i = 0;
  for (const Arg& a : args) bs[i++] = a.b;
  rt_->stream.dispatch(p, std::span<const Binding>(bs, i), push, gx, gy, gz);
}

uint32_t VulkanBackend::groups_for(uint64_t n) const {
  return uint32_t(std::clamp<uint64_t>((n + 255) / 256, 1, 4096));
}

std::pair<uint32_t, uint32_t> VulkanBackend::row_grid(uint64_t rows) const {
  const uint64_t gx = std::clamp<uint64_t>(rows, 1, 65535);
  return {uint32_t(gx), uint32_t((rows + gx - 1) / gx)};
}

std::string VulkanBackend::row_kernel(std::string_view base) const {
  return subgroup_ ? std::string(base) + "_sg" : std::string(base);
}

Tensor VulkanBackend::dense(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = empty(t.shape(), t.dtype(), t.device());
  copy(t, c);
  return c;
}

std::unique_ptr<rf::Backend> make_vulkan_backend(int index) { return std::make_unique<VulkanBackend>(index); }

}  // namespace rf::vk
