#pragma once
// SPIR-V compiled from shaders/*.comp by glslc at build time and embedded in the library.
#include <cstdint>
#include <span>

namespace rf::vk::shaders {

std::span<const uint32_t> fill();

}  // namespace rf::vk::shaders
