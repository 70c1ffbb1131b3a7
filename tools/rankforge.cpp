// The rankforge command line. Every error is one line on stderr and a non-zero exit.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "engine/backend.h"
#include "engine/dist.h"
#include "peft/pattern.h"
#include "tools/commands.h"
#include "tools/project_version.h"  // configure_file: RF_PROJECT_VERSION
#include "tools/version.h"          // vcs_tag: RF_VERSION

namespace {

// Commands in the order a newcomer needs them; any command not named here follows in registration order.
constexpr const char* kCommandOrder[] = {"train",    "eval",    "merge", "quantize", "generate", "forward",
                                         "tokenize", "inspect", "init",  "analyze",  "bench",    "devices"};

std::vector<CLI::App*> commands(CLI::App& app) {
  auto subs = app.get_subcommands([](CLI::App*) { return true; });
  auto rank = [](CLI::App* s) {
    auto it = std::find(std::begin(kCommandOrder), std::end(kCommandOrder), s->get_name());
    return it - std::begin(kCommandOrder);
  };
  std::stable_sort(subs.begin(), subs.end(), [&](CLI::App* a, CLI::App* b) { return rank(a) < rank(b); });
  return subs;
}

// Every command with its one-line description (and its own subcommands, e.g. bench's).
std::string usage(CLI::App& app) {
  auto subs = commands(app);
  size_t w = 0;
  for (auto* s : subs) w = std::max(w, s->get_name().size());
  std::string out = "usage: rankforge [--device cpu|vulkan[:N]] <command> [options]\n\ncommands:\n";
  for (auto* s : subs) {
    std::vector<std::string> inner;
    for (auto* i : s->get_subcommands([](CLI::App*) { return true; }))
      if (s->get_description().find(i->get_name()) == std::string::npos) inner.push_back(i->get_name());
    out += fmt::format("  {:<{}}  {}{}\n", s->get_name(), w, s->get_description(),
                       inner.empty() ? "" : fmt::format(" ({})", fmt::join(inner, ", ")));
  }
  out += "\n`rankforge <command> --help` lists a command's options; `rankforge --version` the build.\n";
  return out;
}

std::string version() {
  std::string v = RF_VERSION == std::string_view(RF_PROJECT_VERSION)
                      ? fmt::format("rankforge {}", RF_VERSION)
                      : fmt::format("rankforge {} (git {})", RF_PROJECT_VERSION, RF_VERSION);
  return fmt::format("{}\nbackends: {}\n", v, fmt::join(rf::backend_summaries(), ", "));
}

// What the words before the command ask for. CLI11's own messages for these ("A subcommand is
// required", "The following arguments were not expected") do not say which commands exist.
enum class TopLevel { Command, NoCommand, Help, Version, Unknown };
TopLevel classify(CLI::App& app, int argc, char** argv, std::string& word) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--device") {
      ++i;
      continue;
    }
    if (a.starts_with("--device=")) continue;
    if (a == "-h" || a == "--help") return TopLevel::Help;
    if (a == "--version") return TopLevel::Version;
    if (a.starts_with("-")) return TopLevel::Command;  // CLI11 names the unknown option
    word = a;
    for (auto* s : commands(app))
      if (s->check_name(word)) return TopLevel::Command;
    return TopLevel::Unknown;
  }
  return TopLevel::NoCommand;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rankforge: tensor engine with built-in parameter-efficient fine-tuning"};
  app.require_subcommand(1);
  int rc = 0;
  // --device (any subcommand) > RANKFORGE_DEVICE > cpu. Parsed lazily: only commands that compute need it.
  std::string device_spec;
  app.add_option("--device", device_spec, "cpu, vulkan or vulkan:N (default: $RANKFORGE_DEVICE, else cpu)");
  rf::tools::DeviceFn device = [&] {
    return device_spec.empty() ? rf::default_device() : rf::parse_device(device_spec);
  };

  rf::tools::add_bench_commands(app, rc, device_spec, device);
  rf::tools::add_bench_train_command(app, rc, device_spec, device);
  rf::tools::add_bench_allreduce_command(app, rc);
  rf::tools::add_bench_ranks_command(app, rc, device_spec, device);
  rf::tools::add_bench_sparse_command(app, rc, device_spec, device);
  rf::tools::add_analyze_command(app, rc, device_spec, device);
  rf::tools::add_inspect_command(app, rc);
  rf::tools::add_tokenize_command(app, rc);
  rf::tools::add_model_commands(app, rc, device_spec, device);
  rf::tools::add_train_commands(app, rc, device_spec, device);
  rf::tools::add_quantize_command(app, rc);

  auto* devices = app.add_subcommand("devices", "List compute devices");
  devices->callback([&] {
    for (const std::string& line : rf::describe_devices()) fmt::print("{}\n", line);
  });

  // Asked-for output (--help, --version) goes to stdout with exit 0; a missing or unknown command is a
  // usage error: the usage on stderr and exit 2, as getopt-style tools do, so a script never mistakes it for success.
  std::string word;
  switch (classify(app, argc, argv, word)) {
    case TopLevel::Help: fmt::print("{}", usage(app)); return 0;
    case TopLevel::Version: fmt::print("{}", version()); return 0;
    case TopLevel::NoCommand: fmt::print(stderr, "{}", usage(app)); return 2;
    case TopLevel::Unknown: {
      std::string near;
      size_t best = word.size() / 3 + 2;  // a typo, not a different word
      for (auto* s : commands(app))
        if (size_t d = rf::peft::edit_distance(word, s->get_name()); d < best) best = d, near = s->get_name();
      fmt::print(stderr, "[rankforge] unknown command '{}'{}\n\n{}", word,
                 near.empty() ? "" : fmt::format("; did you mean '{}'?", near), usage(app));
      return 2;
    }
    case TopLevel::Command: break;
  }
  // Under an MPI launcher (data-parallel training) one line of every message comes from rank 0.
  rf::dist::silence_other_ranks();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "[rankforge] %s\n", e.what());
    return 2;
  } catch (const rf::dist::ReplicatedError& e) {
    std::fprintf(stderr, "[rankforge] %s\n", e.what());  // raised on every rank at once: each just exits
    return 1;
  } catch (const std::exception& e) {
    // A failure of this rank alone: the others would wait for it in their next collective.
    if (rf::dist::active()) rf::dist::abort(1, fmt::format("[rankforge] {}", e.what()));
    std::fprintf(stderr, "[rankforge] %s\n", e.what());
    return 1;
  }
  return rc;
}
