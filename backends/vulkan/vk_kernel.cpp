#include "backends/vulkan/vk_kernel.h"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "backends/vulkan/vk_check.h"

namespace rf::vk {

DeviceBuffer::DeviceBuffer(Context& ctx, size_t bytes) : ctx_(ctx), bytes_(bytes) {
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = std::max<size_t>(bytes, 4);
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  RF_VK_CHECK(vkCreateBuffer(ctx.device(), &bi, nullptr, &buffer_));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(ctx.device(), buffer_, &req);
  // Device-local and mappable first (ReBAR GPUs, lavapipe): plain host-visible memory would make
  // every shader read cross PCIe.
  const VkMemoryPropertyFlags mappable = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type = ctx.memory_type(req.memoryTypeBits, mappable | VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  if (type < 0) type = ctx.memory_type(req.memoryTypeBits, mappable);
  if (type < 0) {
    vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    throw std::runtime_error(
        fmt::format("[vulkan] {} has no host-visible coherent memory for a {}-byte buffer", ctx.info().name, bytes));
  }
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = uint32_t(type);
  VkResult r = vkAllocateMemory(ctx.device(), &ai, nullptr, &memory_);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    throw std::runtime_error(fmt::format("[vulkan] out of device memory allocating {} bytes on {} ({})", bytes,
                                         ctx.info().name, result_name(r)));
  }
  RF_VK_CHECK(vkBindBufferMemory(ctx.device(), buffer_, memory_, 0));
  RF_VK_CHECK(vkMapMemory(ctx.device(), memory_, 0, VK_WHOLE_SIZE, 0, &mapped_));
}

DeviceBuffer::~DeviceBuffer() {
  if (process_exiting()) return;
  if (mapped_) vkUnmapMemory(ctx_.device(), memory_);
  vkDestroyBuffer(ctx_.device(), buffer_, nullptr);
  vkFreeMemory(ctx_.device(), memory_, nullptr);
}

void DeviceBuffer::write(size_t offset, std::span<const std::byte> src) {
  if (offset + src.size() > bytes_)
    throw std::out_of_range(
        fmt::format("[vulkan] write of {} bytes at {} into a {}-byte buffer", src.size(), offset, bytes_));
  std::memcpy(static_cast<std::byte*>(mapped_) + offset, src.data(), src.size());
}

void DeviceBuffer::read(size_t offset, std::span<std::byte> dst) const {
  if (offset + dst.size() > bytes_)
    throw std::out_of_range(
        fmt::format("[vulkan] read of {} bytes at {} from a {}-byte buffer", dst.size(), offset, bytes_));
  std::memcpy(dst.data(), static_cast<const std::byte*>(mapped_) + offset, dst.size());
}

Kernel::Kernel(Context& ctx, std::span<const uint32_t> spirv, uint32_t bindings, uint32_t push_bytes)
    : ctx_(ctx), bindings_(bindings), push_bytes_(push_bytes) {
  VkDevice dev = ctx.device();
  VkShaderModuleCreateInfo mi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  mi.codeSize = spirv.size_bytes();
  mi.pCode = spirv.data();
  RF_VK_CHECK(vkCreateShaderModule(dev, &mi, nullptr, &module_));
  std::vector<VkDescriptorSetLayoutBinding> b(bindings);
  for (uint32_t i = 0; i < bindings; ++i)
    b[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  VkDescriptorSetLayoutCreateInfo li{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  li.bindingCount = bindings;
  li.pBindings = b.data();
  RF_VK_CHECK(vkCreateDescriptorSetLayout(dev, &li, nullptr, &set_layout_));
  VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
  VkPipelineLayoutCreateInfo pli{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pli.setLayoutCount = 1;
  pli.pSetLayouts = &set_layout_;
  pli.pushConstantRangeCount = push_bytes ? 1 : 0;
  pli.pPushConstantRanges = &pr;
  RF_VK_CHECK(vkCreatePipelineLayout(dev, &pli, nullptr, &layout_));
  VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
              nullptr,
              0,
              VK_SHADER_STAGE_COMPUTE_BIT,
              module_,
              "main",
              nullptr};
  ci.layout = layout_;
  RF_VK_CHECK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &ci, nullptr, &pipeline_));
  VkDescriptorPoolSize ps{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, bindings};
  VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  dpi.flags = VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT;
  dpi.maxSets = 1;
  dpi.poolSizeCount = 1;
  dpi.pPoolSizes = &ps;
  RF_VK_CHECK(vkCreateDescriptorPool(dev, &dpi, nullptr, &pool_));
}

Kernel::~Kernel() {
  if (process_exiting()) return;
  VkDevice dev = ctx_.device();
  vkDestroyDescriptorPool(dev, pool_, nullptr);
  vkDestroyPipeline(dev, pipeline_, nullptr);
  vkDestroyPipelineLayout(dev, layout_, nullptr);
  vkDestroyDescriptorSetLayout(dev, set_layout_, nullptr);
  vkDestroyShaderModule(dev, module_, nullptr);
}

void Kernel::run(std::span<DeviceBuffer* const> buffers, std::span<const std::byte> push, uint32_t gx, uint32_t gy,
                 uint32_t gz, uint32_t repeat) {
  if (buffers.size() != bindings_ || push.size() != push_bytes_)
    throw std::invalid_argument(fmt::format("[vulkan] kernel takes {} buffers and {} push bytes, got {} and {}",
                                            bindings_, push_bytes_, buffers.size(), push.size()));
  VkDevice dev = ctx_.device();
  VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ai.descriptorPool = pool_;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &set_layout_;
  VkDescriptorSet set;
  RF_VK_CHECK(vkAllocateDescriptorSets(dev, &ai, &set));
  std::vector<VkDescriptorBufferInfo> infos(bindings_);
  std::vector<VkWriteDescriptorSet> writes(bindings_);
  for (uint32_t i = 0; i < bindings_; ++i) {
    infos[i] = {buffers[i]->handle(), 0, VK_WHOLE_SIZE};
    writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, nullptr, set,       i,      0, 1,
                 VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,      nullptr, &infos[i], nullptr};
  }
  vkUpdateDescriptorSets(dev, bindings_, writes.data(), 0, nullptr);
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = ctx_.command_pool();
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  VkCommandBuffer cb;
  RF_VK_CHECK(vkAllocateCommandBuffers(dev, &cai, &cb));
  VkFence fence = VK_NULL_HANDLE;
  try {
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    RF_VK_CHECK(vkBeginCommandBuffer(cb, &bi));
    vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline_);
    vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, layout_, 0, 1, &set, 0, nullptr);
    if (push_bytes_) vkCmdPushConstants(cb, layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes_, push.data());
    for (uint32_t r = 0; r < repeat; ++r) {
      if (r > 0) {  // a dispatch may read what the previous one wrote (beta != 0)
        VkMemoryBarrier cc{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, VK_ACCESS_SHADER_WRITE_BIT,
                           VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
        vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &cc,
                             0, nullptr, 0, nullptr);
      }
      vkCmdDispatch(cb, gx, gy, gz);
    }
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, VK_ACCESS_SHADER_WRITE_BIT, VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0,
                         nullptr);
    RF_VK_CHECK(vkEndCommandBuffer(cb));
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    RF_VK_CHECK(vkCreateFence(dev, &fi, nullptr, &fence));
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cb;
    RF_VK_CHECK(vkQueueSubmit(ctx_.queue(), 1, &si, fence));
    RF_VK_CHECK(vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX));
  } catch (...) {
    if (fence) vkDestroyFence(dev, fence, nullptr);
    vkFreeCommandBuffers(dev, ctx_.command_pool(), 1, &cb);
    vkFreeDescriptorSets(dev, pool_, 1, &set);
    throw;
  }
  vkDestroyFence(dev, fence, nullptr);
  vkFreeCommandBuffers(dev, ctx_.command_pool(), 1, &cb);
  vkFreeDescriptorSets(dev, pool_, 1, &set);
}

}  // namespace rf::vk
