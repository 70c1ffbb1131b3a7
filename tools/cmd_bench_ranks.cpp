// `rankforge bench ranks`: the planted-rank benchmark (issue 6).
#include "tools/commands.h"

namespace rf::tools {

void add_bench_ranks_command(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device) {}

}  // namespace rf::tools
