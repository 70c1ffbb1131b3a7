// Data-parallel training through mpirun on loopback (2 ranks, as CI runs it): N ranks at batch b
// follow one process at batch N b step for step; a killed rank stops the job without losing the last
// checkpoint, and --resume ends where the uninterrupted run does; SIGTERM on the launcher saves a
// checkpoint. Skipped, with one line, in a build without MPI or where mpirun is missing.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/backend.h"
#include "engine/dist.h"
#include "engine/safetensors.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {

std::string mpi_missing() {
  if (!dist::built_with_mpi()) return "this build has no MPI (meson -Dmpi=enabled needs libopenmpi-dev)";
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) return "mpirun is not installed (openmpi-bin)";
  return "";
}
// One line for the whole suite, then each test returns at once.
bool mpi_skipped() {
  static const std::string why = mpi_missing();
  static bool said = false;
  if (!why.empty() && !said) {
    said = true;
    MESSAGE("[dist] data-parallel tests skipped: " << why);
  }
  return !why.empty();
}
#define SKIP_WITHOUT_MPI() \
  if (mpi_skipped()) return

const char* kMpirun = "mpirun --allow-run-as-root --oversubscribe --bind-to none";

// `mpirun -np N rankforge ARGS` with extra environment (VAR=value ...).
CliRun run_mpi(int np, const std::string& args, const std::string& env = "") {
  return run_cli_with(fmt::format("{}{} -np {} {}", env.empty() ? "" : "env " + env + " ", kMpirun, np, cli_path()),
                      args);
}

// No dropout (the model's nor LoRA's): N ranks and one process then compute the same function of the
// same examples, up to the order of float sums (GEMMs of other shapes, per-rank partial sums). lr 1e-3:
// at 1e-2 this toy model trains chaotically enough that those 1e-7 differences grow past 1e-4 in 20
// steps in any two runs that sum in different orders, data parallel or not. f32: bf16 rounds each
// rank's share-scaled gradient on its own (2^-8 relative), which no 1e-5 comparison survives.
std::string dp_config(const TrainSetup& s, const std::string& out, int batch, int steps, int ckpt_every) {
  const fs::path model_cfg = s.dir / "model" / "config.json";
  auto mc = nlohmann::json::parse(slurp(model_cfg));
  for (const char* k : {"attn_pdrop", "embd_pdrop", "resid_pdrop"}) mc[k] = 0.0;
  std::ofstream(model_cfg) << mc.dump();
  fs::path p = s.dir / fmt::format("{}.yaml", out);
  std::ofstream(p) << fmt::format(
      "model: {}\noutput: {}\nseed: 3\nadapter:\n  r: 4\n  alpha: 8\n  dropout: 0.0\n  target_modules: [c_attn, c_fc]\n"
      "data:\n  train: {}\n  max_seq_len: 24\n  val_fraction: 0.25\ntraining:\n  steps: {}\n  batch_size: {}\n"
      "  lr: 1.0e-3\n  schedule: cosine\n  warmup_steps: 2\n  precision: f32\nlog:\n  every: 1\n  plots: "
      "false\ncheckpoint:\n  every: {}\n",
      (s.dir / "model").string(), (s.dir / out).string(), (s.dir / "data.jsonl").string(), steps, batch, ckpt_every);
  return p.string();
}

// One value per step from metrics.jsonl's step lines.
std::vector<double> per_step(const fs::path& run, const char* key) {
  std::vector<double> v;
  for (const auto& line : lines_of(slurp(run / "metrics.jsonl"))) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && j.contains(key)) v.push_back(j[key].get<double>());
  }
  return v;
}

std::vector<double> per_eval(const fs::path& run) {
  std::vector<double> v;
  for (const auto& line : lines_of(slurp(run / "metrics.jsonl"))) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval_loss")) v.push_back(j["eval_loss"].get<double>());
  }
  return v;
}

double adapter_gap(const fs::path& a, const fs::path& b) {
  auto ta = safetensors::load_file((a / "adapter" / "adapter_model.safetensors").string());
  auto tb = safetensors::load_file((b / "adapter" / "adapter_model.safetensors").string());
  REQUIRE(ta.size() == tb.size());
  double worst = 0;
  for (auto& [name, t] : ta) {
    REQUIRE(tb.count(name) == 1);
    worst = std::max(worst, rel_gap(t, tb.at(name)));
  }
  return worst;
}

const char* kAdalora =
    " --set adapter.method=adalora --set adapter.init_r=6 --set adapter.target_r=3 --set adapter.tinit=4"
    " --set adapter.tfinal=6 --set adapter.delta_t=2";
const char* kRosa =
    " --set adapter.method=rosa --set adapter.d=0.05 --set adapter.schedule=wl3 --set adapter.lora_lr=2e-2";
const char* kAroma =
    " --set adapter.method=aroma --set adapter.max_steps_before_reset=6 --set adapter.convergence_threshold=1e-6"
    " --set training.schedule=cosine_with_restarts --set training.cycle_length=6 --set training.restart_warmup_steps=1";

}  // namespace

TEST_SUITE("dist") {
  TEST_CASE("dist: 2 ranks at batch 2 follow 1 process at batch 4 (every method; grad_accum, checkpointing)") {
    SKIP_WITHOUT_MPI();
    TrainSetup s;
    const std::pair<const char*, std::string> methods[] = {
        {"lora", ""},
        {"dora", " --set adapter.use_dora=true"},
        {"adalora", kAdalora},
        {"rosa", kRosa},
        {"aroma", kAroma},
        {"autolora", " --set adapter.method=autolora"},
        {"gelora", " --set adapter.method=gelora --set adapter.id_samples=24"},
        // two micro-batches a step, blocks recomputed in backward (the buckets then start after it)
        {"lora_accum_ckpt", " --set training.grad_accum=2 --set training.gradient_checkpointing=true"}};
    for (const auto& [name, extra] : methods) {
      CAPTURE(std::string(name));
      const std::string one = std::string(name) + "_n1", two = std::string(name) + "_n2";
      CliRun a = run_cli("train " + dp_config(s, one, 4, 20, 0) + extra);
      REQUIRE_MESSAGE(a.rc == 0, a.err);
      // RANKFORGE_DIST_CHECK=1: the ranks compare parameter checksums after every step.
      CliRun b = run_mpi(2, "train " + dp_config(s, two, 2, 20, 0) + extra, "RANKFORGE_DIST_CHECK=1");
      REQUIRE_MESSAGE(b.rc == 0, b.err);
      const bool accum = extra.find("grad_accum=2") != std::string::npos;
      CHECK(b.err.find(accum ? "2 ranks × batch 2 × grad_accum 2 (global batch 8)"
                             : "2 ranks × batch 2 × grad_accum 1 (global batch 4)") != std::string::npos);
      const std::vector<double> la = per_step(s.dir / one, "loss"), lb = per_step(s.dir / two, "loss");
      REQUIRE(la.size() == 20);
      REQUIRE(lb.size() == 20);
      double worst = 0;
      for (size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::abs(la[i] - lb[i]));
      CHECK_MESSAGE(worst < 1e-5, "largest loss gap ", worst);
      CHECK(la.back() < la.front());
      const double gap = adapter_gap(s.dir / one, s.dir / two);
      // AROMA restarts Adam on pruned moments at each reset (near-sign updates, whose sign a near-0 gradient
      // takes from the summation order); in the official order the fresh A gets one too. Measured 1.5e-5,
      // 3.8e-6 with the reset after the step.
      CHECK_MESSAGE(gap < (std::string(name) == "aroma" ? 5e-5 : 1e-5), "adapter relative gap ", gap);
      // The held-out evaluations, each split over the ranks and summed.
      const std::vector<double> ea = per_eval(s.dir / one), eb = per_eval(s.dir / two);
      REQUIRE(ea.size() == eb.size());
      REQUIRE(ea.size() >= 2);
      for (size_t i = 0; i < ea.size(); ++i) CHECK(std::abs(ea[i] - eb[i]) < 1e-5);
      if (std::string(name) == "aroma") {  // the merge rounds, step by step
        const std::vector<double> ra = per_step(s.dir / one, "aroma_resets"),
                                  rb = per_step(s.dir / two, "aroma_resets");
        CHECK(ra == rb);
        REQUIRE(!ra.empty());
        CHECK(ra.back() >= 2);
      }
    }
  }

  TEST_CASE("dist: on Vulkan each rank takes its device (vulkan:auto) and 2 ranks follow 1 process") {
    SKIP_WITHOUT_MPI();
    if (!backend_available(DeviceType::Vulkan)) {
      MESSAGE("[dist] Vulkan data-parallel test skipped: no Vulkan device");
      return;
    }
    CHECK(parse_device("vulkan:auto").type == DeviceType::Vulkan);  // one process: local rank 0
    TrainSetup s;
    CliRun a = run_cli("--device vulkan train " + dp_config(s, "vk1", 4, 6, 0));
    REQUIRE_MESSAGE(a.rc == 0, a.err);
    CliRun b = run_mpi(2, "--device vulkan:auto train " + dp_config(s, "vk2", 2, 6, 0));
    REQUIRE_MESSAGE(b.rc == 0, b.err);
    CHECK(b.err.find("on vulkan:") != std::string::npos);
    const std::vector<double> la = per_step(s.dir / "vk1", "loss"), lb = per_step(s.dir / "vk2", "loss");
    REQUIRE(la.size() == 6);
    REQUIRE(lb.size() == 6);
    for (size_t i = 0; i < la.size(); ++i) CHECK(std::abs(la[i] - lb[i]) < 1e-5);
    CHECK(adapter_gap(s.dir / "vk1", s.dir / "vk2") < 1e-5);
  }

  TEST_CASE("dist: a killed rank stops the job, the last checkpoint stays, and --resume reaches the full run") {
    SKIP_WITHOUT_MPI();
    TrainSetup s;
    CliRun full = run_mpi(2, "train " + dp_config(s, "full", 2, 16, 4));
    REQUIRE_MESSAGE(full.rc == 0, full.err);
    const std::string cfg = dp_config(s, "killed", 2, 16, 4);
    const auto t0 = std::chrono::steady_clock::now();
    CliRun k = run_mpi(2, "train " + cfg, "RANKFORGE_FAULT_KILL=1:10");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(k.rc != 0);
    CHECK_MESSAGE(secs < 120, "the job took ", secs, " s to end after a rank died");
    CHECK_FALSE(fs::exists(s.dir / "killed" / "adapter"));
    const fs::path state = s.dir / "killed" / "checkpoint" / "trainer_state.json";
    REQUIRE(fs::exists(state));
    const auto meta = nlohmann::json::parse(slurp(state));
    CHECK(meta["run"]["step"] == 8);  // the checkpoint before the kill (every 4 steps)
    CHECK(meta["run"]["world_size"] == 2);
    CliRun r = run_mpi(2, "train " + cfg + " --resume");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK(adapter_bytes(s.dir / "killed") == adapter_bytes(s.dir / "full"));
    // Another world size resumes when the global batch is the same (1 × 4 = 2 × 2), else refuses.
    const std::string cut = dp_config(s, "cut", 2, 16, 0);
    CliRun c = run_mpi(2, "train " + cut + " --stop-after 6");
    CHECK(c.rc != 0);
    CliRun bad = run_cli("train " + cut + " --resume");
    CHECK(bad.rc != 0);
    CHECK(bad.err.find("global batch of 4") != std::string::npos);
    CliRun one = run_cli("train " + cut + " --resume --set training.batch_size=4");
    REQUIRE_MESSAGE(one.rc == 0, one.err);
    const double gap = adapter_gap(s.dir / "cut", s.dir / "full");
    CHECK_MESSAGE(gap < 1e-5, "adapter relative gap ", gap);
  }

  TEST_CASE("dist: a bad config, model or adapter under mpirun ends every rank with rank 0's one line") {
    SKIP_WITHOUT_MPI();
    TrainSetup s;
    const std::string cfg = dp_config(s, "bad", 2, 4, 0);
    for (const std::string& args : {"train " + cfg + " --set training.no_such_key=1",
                                    "train " + cfg + " --set model=" + (s.dir / "missing").string(),
                                    "eval " + cfg + " --adapter " + (s.dir / "missing_adapter").string()}) {
      CAPTURE(args);
      CliRun r = run_mpi(2, args);
      CHECK(r.rc != 0);
      CHECK(r.err.find("[rankforge] ") != std::string::npos);
      CHECK(r.err.find("MPI_ABORT") == std::string::npos);  // every rank failed alike: nobody is killed
      CHECK_FALSE(fs::exists(s.dir / "bad" / "adapter"));
    }
  }

  TEST_CASE("dist: SIGTERM on mpirun saves a checkpoint that --resume continues") {
    SKIP_WITHOUT_MPI();
    TrainSetup s;
    const std::string cfg = dp_config(s, "term", 2, 4000, 0);
    const fs::path err = s.dir / "term.err";
    std::fflush(nullptr);  // the child must not repeat the runner's buffered output
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      sigset_t none;  // mpirun must see SIGTERM whatever the test runner blocked or caught
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGTERM, SIG_DFL);
      ::freopen("/dev/null", "w", stdout);
      ::freopen(err.c_str(), "w", stderr);
      const std::string cmd = fmt::format("exec {} -np 2 {} train {}", kMpirun, cli_path(), cfg);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const fs::path metrics = s.dir / "term" / "metrics.jsonl";
    for (int i = 0; i < 6000 && (!fs::exists(metrics) || lines_of(slurp(metrics)).size() < 4); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK_FALSE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    CHECK_MESSAGE(slurp(err).find("interrupted by SIGTERM") != std::string::npos, slurp(err));
    const fs::path state = s.dir / "term" / "checkpoint" / "trainer_state.json";
    REQUIRE(fs::exists(state));
    const int64_t at = nlohmann::json::parse(slurp(state))["run"]["step"];
    CHECK(at >= 3);
    CHECK(at < 4000);
    CliRun r = run_mpi(2, "train " + cfg + " --resume --stop-after 2");
    CHECK(r.rc != 0);  // stopped again, two steps on
    CHECK(nlohmann::json::parse(slurp(state))["run"]["step"] == at + 2);
  }
}
