// Sparse CSR kernels on Vulkan (RoSA): SpMM, SDDMM, csr_add_dense. Being written (issue 7).
#include <stdexcept>

#include "backends/vulkan/vk_backend.h"

namespace rf::vk {

void VulkanBackend::spmm(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&, bool) {
  throw std::runtime_error("[vulkan] spmm: not implemented yet");
}
void VulkanBackend::sddmm(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&) {
  throw std::runtime_error("[vulkan] sddmm: not implemented yet");
}
void VulkanBackend::csr_add_dense(const Tensor&, const Tensor&, const Tensor&, Tensor&, float) {
  throw std::runtime_error("[vulkan] csr_add_dense: not implemented yet");
}

}  // namespace rf::vk
