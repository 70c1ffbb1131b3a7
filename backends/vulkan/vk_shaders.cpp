#include "backends/vulkan/vk_shaders.h"

namespace rf::vk::shaders {

namespace {
// glslc -mfmt=c writes a braced list of 32-bit words.
constexpr uint32_t kFill[] =
#include "backends/vulkan/fill.spv.inc"
    ;
}  // namespace

std::span<const uint32_t> fill() { return kFill; }

}  // namespace rf::vk::shaders
