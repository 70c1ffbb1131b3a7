// PLACEHOLDER: replaced by the real command.
#include "tools/commands.h"
namespace rf::tools {
void add_model_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {}
}  // namespace rf::tools
