// Command recording: dispatches accumulate in a command buffer (a "frame"); a barrier is recorded
// only when a dispatch touches a range written (or writes a range read) since the last barrier;
// frames are submitted every kFlushEvery dispatches without waiting, and the host waits only
// when it reads data back or the staging ring is full.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "backends/vulkan/vk_check.h"
#include "backends/vulkan/vk_profile.h"
#include "backends/vulkan/vk_runtime.h"
#include "backends/vulkan/vk_shaders.h"

namespace rf::vk {

namespace {
constexpr size_t kFrames = 3;
constexpr uint32_t kFlushEvery = 96;
constexpr uint32_t kSetsPerPool = 512;
constexpr size_t kMaxBindings = 12;
constexpr VkPipelineStageFlags kStages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkAccessFlags kWrites = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
constexpr VkAccessFlags kAll = kWrites | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT;

void full_barrier(VkCommandBuffer cb) {
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, kWrites, kAll};
  vkCmdPipelineBarrier(cb, kStages, kStages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}
}  // namespace

Stream::Stream(Context& ctx, Allocator& mem) : ctx_(ctx), mem_(mem), frames_(kFrames) {
  // A frame records at most kFlushEvery commands (dispatches, uploads, copies; a download's copy
  // starts a fresh frame after a wait); one spare, and the profiler refuses overflow anyway.
  prof_ = Profiler::from_env(ctx, kFrames, kFlushEvery + 1);
  VkDevice dev = ctx.device();
  for (Frame& f : frames_) {
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = ctx.command_pool();
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    RF_VK_CHECK(vkAllocateCommandBuffers(dev, &cai, &f.cb));
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    RF_VK_CHECK(vkCreateFence(dev, &fi, nullptr, &f.fence));
  }
  // Staging ring in host memory (cached when offered: downloads read it with the CPU).
  staging_size_ = mem.device_memory_mapped() ? (size_t(8) << 20) : (size_t(64) << 20);
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = staging_size_;
  bi.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  RF_VK_CHECK(vkCreateBuffer(dev, &bi, nullptr, &staging_));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(dev, staging_, &req);
  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type = ctx.memory_type(req.memoryTypeBits, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  if (type < 0) type = ctx.memory_type(req.memoryTypeBits, host);
  if (type < 0)
    throw std::runtime_error(fmt::format("[vulkan] {} has no host-visible memory for staging", ctx.info().name));
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = uint32_t(type);
  RF_VK_CHECK(vkAllocateMemory(dev, &ai, nullptr, &staging_mem_));
  RF_VK_CHECK(vkBindBufferMemory(dev, staging_, staging_mem_, 0));
  void* p = nullptr;
  RF_VK_CHECK(vkMapMemory(dev, staging_mem_, 0, VK_WHOLE_SIZE, 0, &p));
  staging_map_ = static_cast<std::byte*>(p);
}

Stream::~Stream() {
  if (process_exiting()) return;
  VkDevice dev = ctx_.device();
  try {
    wait();
  } catch (...) {  // a lost device: still release what we own
  }
  for (Frame& f : frames_) {
    for (VkDescriptorPool pool : f.pools) vkDestroyDescriptorPool(dev, pool, nullptr);
    vkDestroyFence(dev, f.fence, nullptr);
    vkFreeCommandBuffers(dev, ctx_.command_pool(), 1, &f.cb);
  }
  for (auto& [name, p] : pipelines_) {
    vkDestroyPipeline(dev, p->pipeline, nullptr);
    vkDestroyPipelineLayout(dev, p->layout, nullptr);
    vkDestroyDescriptorSetLayout(dev, p->set_layout, nullptr);
    vkDestroyShaderModule(dev, p->module, nullptr);
  }
  vkUnmapMemory(dev, staging_mem_);
  vkDestroyBuffer(dev, staging_, nullptr);
  vkFreeMemory(dev, staging_mem_, nullptr);
}

Pipeline& Stream::pipeline(std::string_view shader, uint32_t bindings, uint32_t push_bytes) {
  auto it = pipelines_.find(std::string(shader));
  if (it != pipelines_.end()) {
    if (it->second->bindings != bindings || it->second->push_bytes != push_bytes)
      throw std::logic_error(
          fmt::format("[vulkan] shader {} used with {} bindings / {} push bytes, created with {} / {}", shader,
                      bindings, push_bytes, it->second->bindings, it->second->push_bytes));
    return *it->second;
  }
  std::span<const uint32_t> spirv = shaders::find(shader);
  VkDevice dev = ctx_.device();
  auto p = std::make_unique<Pipeline>();
  p->name = std::string(shader);
  p->bindings = bindings;
  p->push_bytes = push_bytes;
  VkShaderModuleCreateInfo mi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  mi.codeSize = spirv.size_bytes();
  mi.pCode = spirv.data();
  RF_VK_CHECK(vkCreateShaderModule(dev, &mi, nullptr, &p->module));
  std::vector<VkDescriptorSetLayoutBinding> b(bindings);
  for (uint32_t i = 0; i < bindings; ++i)
    b[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  VkDescriptorSetLayoutCreateInfo li{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  li.bindingCount = bindings;
  li.pBindings = b.data();
  RF_VK_CHECK(vkCreateDescriptorSetLayout(dev, &li, nullptr, &p->set_layout));
  VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
  VkPipelineLayoutCreateInfo pli{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pli.setLayoutCount = 1;
  pli.pSetLayouts = &p->set_layout;
  pli.pushConstantRangeCount = push_bytes ? 1 : 0;
  pli.pPushConstantRanges = &pr;
  RF_VK_CHECK(vkCreatePipelineLayout(dev, &pli, nullptr, &p->layout));
  VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
              nullptr,
              0,
              VK_SHADER_STAGE_COMPUTE_BIT,
              p->module,
              "main",
              nullptr};
  ci.layout = p->layout;
  RF_VK_CHECK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &ci, nullptr, &p->pipeline));
  return *pipelines_.emplace(std::string(shader), std::move(p)).first->second;
}

void Stream::begin_if_needed() {
  Frame& f = frames_[cur_];
  if (f.recording) return;
  VkDevice dev = ctx_.device();
  if (f.in_flight) {
    RF_VK_CHECK(vkWaitForFences(dev, 1, &f.fence, VK_TRUE, UINT64_MAX));
    RF_VK_CHECK(vkResetFences(dev, 1, &f.fence));
    f.in_flight = false;
    if (prof_) prof_->collect(cur_);
  }
  for (VkDescriptorPool pool : f.pools) RF_VK_CHECK(vkResetDescriptorPool(dev, pool, 0));
  f.pool_at = 0;
  RF_VK_CHECK(vkResetCommandBuffer(f.cb, 0));
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  RF_VK_CHECK(vkBeginCommandBuffer(f.cb, &bi));
  full_barrier(f.cb);  // orders this frame after earlier submissions (queues do not)
  if (prof_) prof_->begin_frame(cur_, f.cb);
  f.recording = true;
  pending_.clear();
}

void Stream::hazard_barrier(std::span<const Binding> bs) {
  bool conflict = false;
  for (const Binding& b : bs) {
    for (const Range& r : pending_)
      if (r.buffer == b.buffer && r.lo < b.offset + b.range && b.offset < r.hi && (r.write || b.write)) conflict = true;
  }
  if (conflict) {
    full_barrier(frames_[cur_].cb);
    barriers_++;
    pending_.clear();
  }
  for (const Binding& b : bs) pending_.push_back({b.buffer, b.offset, b.offset + b.range, b.write});
}

VkDescriptorSet Stream::descriptor_set(Frame& f, Pipeline& p) {
  VkDevice dev = ctx_.device();
  for (;;) {
    if (f.pool_at == f.pools.size()) {
      VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * uint32_t(kMaxBindings)};
      VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
      dpi.maxSets = kSetsPerPool;
      dpi.poolSizeCount = 1;
      dpi.pPoolSizes = &ps;
      VkDescriptorPool pool;
      RF_VK_CHECK(vkCreateDescriptorPool(dev, &dpi, nullptr, &pool));
      f.pools.push_back(pool);
    }
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = f.pools[f.pool_at];
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &p.set_layout;
    VkDescriptorSet set;
    VkResult r = vkAllocateDescriptorSets(dev, &ai, &set);
    if (r == VK_SUCCESS) return set;
    if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) fail("vkAllocateDescriptorSets", r);
    f.pool_at++;
  }
}

void Stream::dispatch(Pipeline& p, std::span<const Binding> bs, const void* push, uint32_t gx, uint32_t gy,
                      uint32_t gz) {
  if (bs.size() != p.bindings || bs.size() > kMaxBindings)
    throw std::logic_error("[vulkan] dispatch with the wrong number of bindings");
  if (gx == 0 || gy == 0 || gz == 0) return;
  const DeviceInfo& info = ctx_.info();
  if (gx > info.max_groups_x || gy > info.max_groups_yz || gz > info.max_groups_yz)
    throw std::runtime_error(
        fmt::format("[vulkan] dispatch of {}x{}x{} workgroups exceeds the device limit", gx, gy, gz));
  begin_if_needed();
  Frame& f = frames_[cur_];
  hazard_barrier(bs);
  VkDescriptorSet set = descriptor_set(f, p);
  VkDescriptorBufferInfo infos[kMaxBindings];
  VkWriteDescriptorSet writes[kMaxBindings];
  for (uint32_t i = 0; i < p.bindings; ++i) {
    if (bs[i].range > info.max_storage_range)
      throw std::runtime_error(fmt::format("[vulkan] a {}-byte binding exceeds maxStorageBufferRange ({}) of {}",
                                           bs[i].range, info.max_storage_range, info.name));
    infos[i] = {bs[i].buffer, bs[i].offset, bs[i].range};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, nullptr, set,       i,      0, 1,
                 VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,      nullptr, &infos[i], nullptr};
  }
  vkUpdateDescriptorSets(ctx_.device(), p.bindings, writes, 0, nullptr);
  vkCmdBindPipeline(f.cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  vkCmdBindDescriptorSets(f.cb, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0, nullptr);
  if (p.push_bytes) vkCmdPushConstants(f.cb, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p.push_bytes, push);
  if (prof_) prof_->begin(cur_, f.cb, p.name);
  vkCmdDispatch(f.cb, gx, gy, gz);
  if (prof_) prof_->end(cur_, f.cb);
  dispatches_++;
  if (++recorded_ >= kFlushEvery) flush();
}

void Stream::flush() {
  Frame& f = frames_[cur_];
  if (!f.recording) return;
  // Device writes become visible to host reads once the fence signals (downloads map memory).
  VkMemoryBarrier hb{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, kWrites, VK_ACCESS_HOST_READ_BIT};
  vkCmdPipelineBarrier(f.cb, kStages, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &hb, 0, nullptr, 0, nullptr);
  RF_VK_CHECK(vkEndCommandBuffer(f.cb));
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &f.cb;
  f.recording = false;
  VkResult r = vkQueueSubmit(ctx_.queue(), 1, &si, f.fence);
  if (r == VK_ERROR_DEVICE_LOST) throw std::runtime_error(fmt::format("[vulkan] device lost: {}", ctx_.info().name));
  if (r != VK_SUCCESS) fail("vkQueueSubmit", r);
  f.in_flight = true;
  submits_++;
  recorded_ = 0;
  pending_.clear();
  cur_ = (cur_ + 1) % frames_.size();
}

void Stream::wait() {
  flush();
  for (Frame& f : frames_) {
    if (!f.in_flight) continue;
    VkResult r = vkWaitForFences(ctx_.device(), 1, &f.fence, VK_TRUE, UINT64_MAX);
    if (r == VK_ERROR_DEVICE_LOST) throw std::runtime_error(fmt::format("[vulkan] device lost: {}", ctx_.info().name));
    if (r != VK_SUCCESS) fail("vkWaitForFences", r);
    RF_VK_CHECK(vkResetFences(ctx_.device(), 1, &f.fence));
    f.in_flight = false;
    if (prof_) prof_->collect(size_t(&f - frames_.data()));
  }
  staging_head_ = 0;
}

size_t Stream::stage(size_t bytes) {
  if (staging_head_ + bytes > staging_size_) wait();  // every earlier copy out of the ring is done
  size_t at = staging_head_;
  staging_head_ = (staging_head_ + bytes + 255) / 256 * 256;
  return at;
}

void Stream::upload(const Allocation& dst, size_t offset, std::span<const std::byte> src) {
  const bool idle =
      recorded_ == 0 && std::none_of(frames_.begin(), frames_.end(), [](const Frame& f) { return f.in_flight; });
  size_t done = 0;
  while (done < src.size()) {
    if (dst.block->mapped && (idle || src.size() - done > staging_size_)) {
      if (!idle) wait();  // large upload while busy: one wait, then a direct write
      std::memcpy(dst.block->mapped + dst.user_offset + offset + done, src.data() + done, src.size() - done);
      return;
    }
    size_t chunk = std::min(src.size() - done, staging_size_);
    size_t at = stage(chunk);
    std::memcpy(staging_map_ + at, src.data() + done, chunk);
    begin_if_needed();
    Binding bs[2] = {{staging_, at, chunk, false}, {dst.block->buffer, dst.user_offset + offset + done, chunk, true}};
    hazard_barrier(bs);
    VkBufferCopy region{at, dst.user_offset + offset + done, chunk};
    if (prof_) prof_->begin(cur_, frames_[cur_].cb, "upload");
    vkCmdCopyBuffer(frames_[cur_].cb, staging_, dst.block->buffer, 1, &region);
    if (prof_) prof_->end(cur_, frames_[cur_].cb);
    if (++recorded_ >= kFlushEvery) flush();
    done += chunk;
  }
}

void Stream::copy(VkBuffer src, size_t src_offset, VkBuffer dst, size_t dst_offset, size_t bytes) {
  if (bytes == 0) return;
  begin_if_needed();
  Binding bs[2] = {{src, src_offset, bytes, false}, {dst, dst_offset, bytes, true}};
  hazard_barrier(bs);
  VkBufferCopy region{src_offset, dst_offset, bytes};
  if (prof_) prof_->begin(cur_, frames_[cur_].cb, "copy");
  vkCmdCopyBuffer(frames_[cur_].cb, src, dst, 1, &region);
  if (prof_) prof_->end(cur_, frames_[cur_].cb);
  if (++recorded_ >= kFlushEvery) flush();
}

void Stream::download(const Allocation& src, size_t offset, std::span<std::byte> dst) {
  wait();
  if (src.block->mapped) {
    std::memcpy(dst.data(), src.block->mapped + src.user_offset + offset, dst.size());
    return;
  }
  for (size_t done = 0; done < dst.size();) {
    size_t chunk = std::min(dst.size() - done, staging_size_);
    begin_if_needed();
    Binding bs[2] = {{src.block->buffer, src.user_offset + offset + done, chunk, false}, {staging_, 0, chunk, true}};
    hazard_barrier(bs);
    VkBufferCopy region{src.user_offset + offset + done, 0, chunk};
    if (prof_) prof_->begin(cur_, frames_[cur_].cb, "download");
    vkCmdCopyBuffer(frames_[cur_].cb, src.block->buffer, staging_, 1, &region);
    if (prof_) prof_->end(cur_, frames_[cur_].cb);
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, VK_ACCESS_TRANSFER_WRITE_BIT,
                       VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(frames_[cur_].cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0,
                         nullptr, 0, nullptr);
    wait();
    std::memcpy(dst.data() + done, staging_map_, chunk);
    done += chunk;
  }
}

}  // namespace rf::vk
