// Runs are never lost or clobbered (issue 16, items 1-8): the folder lock, no silent restart,
// merge never overwrites its inputs, SIGTERM/SIGHUP, the non-finite message, failed writes, and the
// resolved config.yaml that reproduces a run.
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/cli_util.h"
#include "tests/train_setup.h"
#include "tools/run_files.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// Every file under dir with its bytes (but the lock file, whose note names its latest holder):
// "nothing was touched" compares two of these.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != tools::DirLock::kFile)
      out[fs::relative(e.path(), dir).string()] = slurp(e.path());
  return out;
}

std::vector<std::string> tmp_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (has(e.path().filename().string(), ".tmp")) out.push_back(e.path().string());
  return out;
}

// The CLI under a file-size limit (what a full disk does to a write), with SIGXFSZ ignored as a
// shell's `trap '' XFSZ` would; the CLI must turn the failed write into an error.
CliRun run_cli_fsize(const std::string& args, rlim_t max_bytes, const fs::path& scratch) {
  const fs::path o = scratch / "fsize.out", e = scratch / "fsize.err";
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct rlimit rl = {max_bytes, max_bytes};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    ::signal(SIGXFSZ, SIG_IGN);
    const std::string cmd = fmt::format("{} {} > {} 2> {}", cli_path(), args, o.string(), e.string());
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(o), slurp(e)};
}

// Starts `train cfg` in the background and returns its pid once its first checkpoint exists.
pid_t start_train(const std::string& cfg, const fs::path& run) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string cli = cli_path();
    ::freopen((run.string() + ".stderr").c_str(), "w", stderr);
    ::execl(cli.c_str(), cli.c_str(), "train", cfg.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 40000 && !fs::exists(run / "checkpoint" / "trainer_state.json"); ++i)
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  return pid;
}

}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli safety: a locked run folder refuses a second train and merge at once, naming the holder's pid") {
    TrainSetup s;
    const std::string cfg = s.config("run", 4, 2);
    REQUIRE_MESSAGE(run_cli("train " + cfg).rc == 0, "first run");
    const auto before = snapshot(s.dir / "run");
    {
      tools::DirLock held(s.dir / "run", "test");  // another process holding the folder, as a running train does
      CliRun b = run_cli("train " + cfg + " --overwrite");
      CHECK(b.rc == 1);
      CHECK(has(b.err, (s.dir / "run").string() + " is in use by another rankforge process (pid " +
                           std::to_string(::getpid())));
      CHECK(snapshot(s.dir / "run") == before);
    }
    {
      tools::DirLock held(s.dir / "out", "test");
      CliRun m =
          run_cli(fmt::format("merge --model {} --adapter {} --output {} --overwrite", (s.dir / "model").string(),
                              (s.dir / "run" / "adapter").string(), (s.dir / "out").string()));
      CHECK(m.rc == 1);
      CHECK(has(m.err, (s.dir / "out").string() + " is in use by another rankforge process (pid " +
                           std::to_string(::getpid())));
      CHECK(snapshot(s.dir / "out").empty());
    }
    // Released: the same command goes through.
    CHECK(run_cli("train " + cfg + " --overwrite").rc == 0);
  }

  TEST_CASE(
      "cli safety: train refuses to start over a run; --resume says where it resumed and refuses a changed config") {
    TrainSetup s;
    const std::string cfg = s.config("run", 6, 3);
    CliRun a = run_cli("train " + cfg + " --stop-after 3");
    REQUIRE(a.rc == 130);
    const auto before = snapshot(s.dir / "run");
    CliRun again = run_cli("train " + cfg);
    CHECK(again.rc == 1);
    CHECK(has(again.err, "already holds a run (checkpoint)"));
    CHECK(has(again.err, "pass --resume to continue it or --overwrite to start over"));
    CHECK(snapshot(s.dir / "run") == before);
    CliRun changed = run_cli("train " + cfg + " --resume --set training.lr=0.5 --set adapter.dropout=0");
    CHECK(changed.rc == 1);
    CHECK(has(changed.err, "training.lr (0.01 -> 0.5)"));
    CHECK(has(changed.err, "adapter.dropout (0.1 -> 0)"));
    CHECK(has(changed.err, "training.steps, training.epochs"));
    CHECK(has(changed.err, "eval.every"));
    CHECK(snapshot(s.dir / "run") == before);
    // training.steps, log.* and eval.* may change on --resume.
    CliRun r = run_cli("train " + cfg + " --resume --set training.steps=8 --set log.every=2 --set eval.every=0");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK(has(r.err, "resumed from step 3"));
    CHECK(has(slurp(s.dir / "run" / "config.yaml"), "  steps: 8"));
    CHECK(run_cli("train " + cfg + " --resume --overwrite").rc != 0);
    CliRun o = run_cli("train " + cfg + " --overwrite");
    REQUIRE_MESSAGE(o.rc == 0, o.err);
    CHECK(has(slurp(s.dir / "run" / "config.yaml"), "  steps: 6"));
  }

  TEST_CASE("cli safety: merge never overwrites its inputs and needs --overwrite for a non-empty output") {
    TrainSetup s;
    REQUIRE(run_cli("train " + s.config("run", 3, 0)).rc == 0);
    const std::string model = (s.dir / "model").string(), adapter = (s.dir / "run" / "adapter").string();
    const auto model_files = snapshot(s.dir / "model"), adapter_files = snapshot(s.dir / "run" / "adapter");
    auto merge = [&](const std::string& out, const std::string& extra = "") {
      return run_cli(fmt::format("merge --model {} --adapter {} --output {}{}", model, adapter, out, extra));
    };
    for (const std::string& out :
         {model, model + "/", (s.dir / "model" / "sub").string(), adapter, (s.dir / "run").string(), s.dir.string()}) {
      CAPTURE(out);
      CliRun r = merge(out, " --overwrite");
      CHECK(r.rc == 1);
      CHECK(has(r.err, "the merge would overwrite its input"));
    }
    CHECK(!fs::exists(s.dir / "model" / "sub"));
    CHECK(snapshot(s.dir / "model") == model_files);
    CHECK(snapshot(s.dir / "run" / "adapter") == adapter_files);
    const fs::path out = s.dir / "merged";
    REQUIRE(merge(out.string()).rc == 0);
    const auto merged = snapshot(out);
    CHECK(merged.count("model.safetensors") == 1);
    CliRun twice = merge(out.string());
    CHECK(twice.rc == 1);
    CHECK(has(twice.err, "is not empty; pass --overwrite"));
    CHECK(snapshot(out) == merged);
    REQUIRE(merge(out.string(), " --overwrite").rc == 0);
    CHECK(snapshot(out) == merged);  // the same merge, replaced whole
    CHECK(tmp_entries(s.dir).empty());
    // A failed merge into a new folder leaves no folder behind.
    CliRun bad = run_cli(fmt::format("merge --model {} --adapter {} --output {}", model, (s.dir / "nope").string(),
                                     (s.dir / "m2").string()));
    CHECK(bad.rc == 1);
    CHECK(!fs::exists(s.dir / "m2"));
  }

  TEST_CASE(
      "cli safety: SIGTERM and SIGHUP save a checkpoint, say so and exit 143 / 129; --resume ends as an uninterrupted "
      "run") {
    TrainSetup s;
    REQUIRE(run_cli("train " + s.config("whole", 80, 1)).rc == 0);
    for (auto [sig, code, name] : {std::tuple{SIGTERM, 143, "SIGTERM"}, std::tuple{SIGHUP, 129, "SIGHUP"}}) {
      CAPTURE(name);
      const std::string cfg = s.config(name, 80, 1);
      pid_t pid = start_train(cfg, s.dir / name);
      ::kill(pid, sig);
      int status = 0;
      ::waitpid(pid, &status, 0);
      REQUIRE(WIFEXITED(status));
      REQUIRE_MESSAGE(WEXITSTATUS(status) == code, "exit status ", WEXITSTATUS(status),
                      " (0: the run ended before the signal)");
      const std::string err = slurp(s.dir / (std::string(name) + ".stderr"));
      CHECK(has(err, fmt::format("interrupted by {} at step", name)));
      CHECK(has(err, "checkpoint saved"));
      CHECK(std::count(err.begin(), err.end(), '\n') >= 1);
      CHECK_FALSE(fs::exists(s.dir / name / "adapter"));
      CliRun r = run_cli("train " + cfg + " --resume");
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      CHECK(adapter_bytes(s.dir / name) == adapter_bytes(s.dir / "whole"));
    }
  }

  TEST_CASE("cli safety: the non-finite stop names the step of the last checkpoint, or says there is none") {
    TrainSetup s;
    const std::string nan = " --set training.optimizer=sgd --set training.lr=1e30 --set training.max_grad_norm=0";
    CliRun none = run_cli("train " + s.config("none", 12, 0) + nan);
    CHECK(none.rc == 1);
    CHECK(has(none.err, "there is no checkpoint yet"));
    CliRun some = run_cli("train " + s.config("some", 12, 1) + nan);
    CHECK(some.rc == 1);
    REQUIRE(fs::exists(s.dir / "some" / "checkpoint" / "trainer_state.json"));
    const auto st = nlohmann::json::parse(slurp(s.dir / "some" / "checkpoint" / "trainer_state.json"));
    CHECK(has(some.err, fmt::format("the last checkpoint (step {})", st["run"]["step"].get<int64_t>())));
  }

  TEST_CASE("cli safety: a failed write keeps the previous files and leaves no temporary folder") {
    TrainSetup s;
    // merge --overwrite that cannot write the weights: the previous merged checkpoint stays whole.
    REQUIRE(run_cli("train " + s.config("run", 6, 3) + " --stop-after 3").rc == 130);
    REQUIRE(run_cli(fmt::format("merge --model {} --adapter {} --output {}", (s.dir / "model").string(),
                                (s.dir / "run" / "checkpoint").string(), (s.dir / "merged").string()))
                .rc == 0);
    const auto merged = snapshot(s.dir / "merged");
    const auto weights = fs::file_size(s.dir / "merged" / "model.safetensors");
    CliRun m =
        run_cli_fsize(fmt::format("merge --model {} --adapter {} --output {} --overwrite", (s.dir / "model").string(),
                                  (s.dir / "run" / "checkpoint").string(), (s.dir / "merged").string()),
                      weights / 2, s.dir);
    CHECK(m.rc == 1);
    CHECK(std::count(m.err.begin(), m.err.end(), '\n') == 1);
    CHECK(snapshot(s.dir / "merged") == merged);
    CHECK(tmp_entries(s.dir).empty());
    // A resumed run whose next checkpoint cannot be written: the step-3 checkpoint stays as it was.
    const auto run = snapshot(s.dir / "run");
    const auto state = fs::file_size(s.dir / "run" / "checkpoint" / "trainer_state.safetensors");
    REQUIRE(state > 4 * slurp(s.dir / "run" / "config.yaml").size());
    CliRun r = run_cli_fsize("train " + (s.dir / "run.yaml").string() + " --resume", state / 2, s.dir);
    CHECK(r.rc == 1);
    CHECK(has(r.err, "trainer_state.safetensors"));
    const auto after = snapshot(s.dir / "run");
    for (const auto& [name, bytes] : run)
      if (name.starts_with("checkpoint/")) CHECK_MESSAGE(after.at(name) == bytes, name);
    CHECK(tmp_entries(s.dir / "run").empty());
    // And with room again it resumes and ends normally.
    CliRun ok = run_cli("train " + (s.dir / "run.yaml").string() + " --resume");
    CHECK_MESSAGE(ok.rc == 0, ok.err);
  }
}

TEST_SUITE("e2e") {
  TEST_CASE("cli: eval --base --adapter is an error; train --list-keys and --help come from the key table") {
    TrainSetup s;
    CliRun e = run_cli(fmt::format("eval {} --base --adapter {}", s.config("run", 2, 0), (s.dir / "x").string()));
    CHECK(e.rc == 1);
    CHECK(has(e.err, "[eval] --base and --adapter exclude each other"));
    CliRun k = run_cli("train --list-keys training");
    REQUIRE(k.rc == 0);
    CHECK(has(k.out, "training:\n"));
    CHECK(has(k.out, "  lr "));
    CHECK(has(k.out, "number"));
    CHECK(!has(k.out, "adapter:"));
    CliRun all = run_cli("train --list-keys");
    REQUIRE(all.rc == 0);
    for (const char* key : {"init_r", "search_weight_decay", "density_pattern", "max_seq_len", "plots"})
      CHECK_MESSAGE(has(all.out, key), key);
    CliRun bad = run_cli("train --list-keys trainig");
    CHECK(bad.rc == 1);
    CHECK(has(bad.err, "unknown section 'trainig'"));
    CliRun h = run_cli("train --help");
    CHECK(h.rc == 0);
    CHECK(has(h.out, "lora, adalora, aroma, autolora, gelora, rosa, full"));
    CHECK(has(h.out, "--list-keys"));
    CliRun none = run_cli("train");
    CHECK(none.rc == 1);
    CHECK(has(none.err, "a YAML config is required"));
  }
}

TEST_SUITE("e2e") {
  TEST_CASE("cli safety: init writes its checkpoint whole and needs --overwrite for a non-empty output") {
    TrainSetup s;
    const std::string config = (s.dir / "model" / "config.json").string(), out = (s.dir / "init").string();
    REQUIRE(run_cli(fmt::format("init --config {} --output {} --seed 1", config, out)).rc == 0);
    const auto first = snapshot(s.dir / "init");
    CHECK(first.count("model.safetensors") == 1);
    CliRun again = run_cli(fmt::format("init --config {} --output {} --seed 2", config, out));
    CHECK(again.rc == 1);
    CHECK(has(again.err, "is not empty; pass --overwrite"));
    CHECK(snapshot(s.dir / "init") == first);
    REQUIRE(run_cli(fmt::format("init --config {} --output {} --seed 2 --overwrite", config, out)).rc == 0);
    CHECK(snapshot(s.dir / "init") != first);
    CHECK(tmp_entries(s.dir).empty());
  }
}
