#pragma once
// Which kernel family runs a GEMM whose a and b are both F16 or both BF16 (f32 accumulate and out):
// the dispatch in vk_ops_matmul.cpp and `rankforge devices` (vk_register.cpp) both ask this.
#include <string_view>

#include "backends/vulkan/vk_device.h"
#include "engine/dtype.h"

namespace rf::vk {

// "coopmat_nv" / "coopmat_khr": cooperative matrices (f16 only; NV's types have no bf16);
// "simt_f16": f16 tiles and f16vec2 FMAs flushed into f32 (devices with shaderFloat16);
// "f32math": 16-bit loads widened to f32 (every device with 16-bit storage; all of bf16);
// "" when the device has no 16-bit storage. F16 takes the first available in that order unless
// RANKFORGE_VK_MATMUL16=coopmat|simt_f16|f32math forces one (a one-line error when the device or
// the build lacks it). BF16 always runs f32math: the override picks among f16 kernels only.
std::string_view matmul16_kernel(const DeviceInfo& d, DType t);

}  // namespace rf::vk
