// `rankforge analyze intrinsic-dim --model DIR --data FILE`: GeLoRA's per-layer TwoNN profile + PNG.
#include "tools/commands.h"

namespace rf::tools {

void add_analyze_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {
  app.add_subcommand("analyze", "Model analyses (intrinsic-dim)")->require_subcommand(1);
}

}  // namespace rf::tools
