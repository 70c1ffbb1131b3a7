#pragma once
// Vulkan result checks: one line naming the call and the error, thrown as std::runtime_error.
#include <vulkan/vulkan.h>

#include <string_view>

namespace rf::vk {

std::string_view result_name(VkResult r);
[[noreturn]] void fail(const char* call, VkResult r);

}  // namespace rf::vk

#define RF_VK_CHECK(call)                                        \
  do {                                                           \
    VkResult rf_vk_r_ = (call);                                  \
    if (rf_vk_r_ != VK_SUCCESS) ::rf::vk::fail(#call, rf_vk_r_); \
  } while (0)
