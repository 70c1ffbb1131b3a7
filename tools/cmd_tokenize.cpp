// PLACEHOLDER: replaced by the real command.
#include "tools/commands.h"
namespace rf::tools {
void add_tokenize_command(CLI::App& app, int& rc) {}
}  // namespace rf::tools
