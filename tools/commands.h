#pragma once
// Each rankforge subcommand registers itself on the app; `rc` receives its exit code and
// `device` resolves --device / RANKFORGE_DEVICE lazily.
#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/quant_weight.h"

namespace rf::tools {

using DeviceFn = std::function<Device()>;
void add_bench_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device);
void add_inspect_command(CLI::App& app, int& rc);
void add_tokenize_command(CLI::App& app, int& rc);
void add_train_commands(CLI::App& app, int& rc, std::string& device_spec,
                        const DeviceFn& device);           // train, eval, merge
void add_bench_allreduce_command(CLI::App& app, int& rc);  // mpirun: rf::dist sums at several sizes
void add_bench_train_command(CLI::App& app, int& rc, std::string& device_spec,
                             const DeviceFn& device);  // after add_bench_commands
void add_bench_ranks_command(CLI::App& app, int& rc, std::string& device_spec,
                             const DeviceFn& device);  // after add_bench_commands
void add_bench_sparse_command(CLI::App& app, int& rc, std::string& device_spec,
                              const DeviceFn& device);  // after add_bench_commands
void add_analyze_command(CLI::App& app, int& rc, std::string& device_spec,
                         const DeviceFn& device);  // analyze intrinsic-dim
void add_model_commands(CLI::App& app, int& rc, std::string& device_spec, const DeviceFn& device);  // forward, generate
void add_quantize_command(CLI::App& app, int& rc);

// --quantize / --double-quant / --quant-blocksize / --compute-dtype / --skip-modules (cmd_quantize.cpp)
struct QuantArgs {
  std::string type;  // empty: not quantized
  bool double_quant = false;
  int blocksize = 64;
  std::string compute = "bf16";
  std::vector<std::string> skip;
};
void add_quant_flags(CLI::App* c, QuantArgs& q, bool required);
std::optional<QuantSpec> quant_spec_arg(const QuantArgs& q);

}  // namespace rf::tools
