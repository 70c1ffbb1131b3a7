// `rankforge forward --adapter --loss-grads`, `train` (kill and resume, SIGINT, NaN stop, config
// errors), `eval` and `merge`, end to end through the binary.
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/safetensors.h"
#include "models/tokenizer.h"
#include "tests/cli_util.h"
#include "tests/test_util.h"
#include "tests/train_setup.h"

namespace fs = std::filesystem;
using namespace rf;
using namespace rf::test;

namespace {}  // namespace

TEST_SUITE("e2e") {
  TEST_CASE("cli: forward --adapter --loss-grads equals PEFT's logits, loss and gradients for every fixture") {
    fs::path tmp = fs::temp_directory_path() / fmt::format("rf_cli_lg_{}", ::getpid());
    fs::create_directories(tmp);
    for (std::string arch : {"gpt2", "llama", "qwen2", "bert"}) {
      CAPTURE(arch);
      fs::path dir = fs::path(fixtures_dir()) / "hf" / arch;
      auto ref = safetensors::load_file((dir / "reference.safetensors").string());
      auto grads = safetensors::load_file((dir / "adapter_grads.safetensors").string());
      safetensors::save_file({{"input_ids", ref.at("input_ids")}}, (tmp / "in.safetensors").string());
      CliRun r = run_cli(fmt::format("forward --model {} --adapter {} --input {} --output {} --loss-grads",
                                     (dir / "base").string(), (dir / "adapter").string(),
                                     (tmp / "in.safetensors").string(), (tmp / "out.safetensors").string()));
      REQUIRE_MESSAGE(r.rc == 0, r.err);
      auto out = safetensors::load_file((tmp / "out.safetensors").string());
      CHECK(rel_gap(out.at("logits"), ref.at("adapted_logits")) < 1e-4);
      CHECK(std::abs(out.at("loss").item() - ref.at("loss").item()) <= 1e-3 * std::abs(ref.at("loss").item()));
      CHECK(out.size() == grads.size() + 2);
      for (auto& [name, g] : grads) {
        CAPTURE(name);
        REQUIRE(out.count(name) == 1);
        CHECK(rel_gap(out.at(name), g) < 1e-3);
      }
    }
    fs::remove_all(tmp);
  }

  TEST_CASE("cli: merge writes a checkpoint whose plain forward equals the adapted logits") {
    fs::path tmp = fs::temp_directory_path() / fmt::format("rf_cli_merge_{}", ::getpid());
    fs::create_directories(tmp);
    for (std::string arch : {"gpt2", "llama"}) {
      fs::path dir = fs::path(fixtures_dir()) / "hf" / arch;
      CliRun m = run_cli(fmt::format("merge --model {} --adapter {} --output {}", (dir / "base").string(),
                                     (dir / "adapter").string(), (tmp / arch).string()));
      REQUIRE_MESSAGE(m.rc == 0, m.err);
      auto ref = safetensors::load_file((dir / "reference.safetensors").string());
      safetensors::save_file({{"input_ids", ref.at("input_ids")}}, (tmp / "in.safetensors").string());
      CliRun f = run_cli(fmt::format("forward --model {} --input {} --output {}", (tmp / arch).string(),
                                     (tmp / "in.safetensors").string(), (tmp / "out.safetensors").string()));
      REQUIRE_MESSAGE(f.rc == 0, f.err);
      CHECK(rel_gap(safetensors::load_file((tmp / "out.safetensors").string()).at("logits"), ref.at("adapted_logits")) <
            1e-4);
    }
    fs::remove_all(tmp);
  }

  TEST_CASE("cli: train improves held-out loss, writes a PEFT adapter, metrics and plots; eval reads it back") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("run", 16, 8));
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    fs::path run = s.dir / "run";
    for (const char* f : {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metrics.jsonl",
                          "loss.png", "ranks.png", "checkpoint/trainer_state.json", "config.yaml"})
      CHECK_MESSAGE(fs::exists(run / f), f);
    auto cfg = nlohmann::json::parse(slurp(run / "adapter/adapter_config.json"));
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["task_type"] == "CAUSAL_LM");
    CHECK(cfg["fan_in_fan_out"] == true);
    // before/after printed; the loss must have gone down
    size_t at = r.out.find("before ");
    REQUIRE(at != std::string::npos);
    double before = std::stod(r.out.substr(at + 7)), after = std::stod(r.out.substr(r.out.find("after ") + 6));
    CHECK(after < before);
    CliRun e = run_cli("eval " + (s.dir / "run.yaml").string());
    REQUIRE_MESSAGE(e.rc == 0, e.err);
    CHECK(std::abs(std::stod(e.out.substr(e.out.find("eval_loss=") + 10)) - after) < 1e-4);
  }

  TEST_CASE("cli: an interrupted (--stop-after), SIGINT-ed or killed run resumes to a byte-identical adapter") {
    TrainSetup s;
    CliRun a = run_cli("train " + s.config("full", 12, 3));
    REQUIRE_MESSAGE(a.rc == 0, a.err);
    const std::string want = adapter_bytes(s.dir / "full");
    REQUIRE(!want.empty());
    // Stopped after 5 steps (checkpoint at 5), then resumed.
    std::string cfg = s.config("stopped", 12, 3);
    CliRun b = run_cli("train " + cfg + " --stop-after 5");
    CHECK(b.rc == 130);
    CHECK(b.err.find("interrupted at step 5") != std::string::npos);
    CliRun b2 = run_cli("train " + cfg + " --resume");
    REQUIRE_MESSAGE(b2.rc == 0, b2.err);
    CHECK(adapter_bytes(s.dir / "stopped") == want);
    // SIGKILL right after the first checkpoint appears: resume from whatever checkpoint is there.
    std::string kcfg = s.config("killed", 12, 3);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::string cli = cli_path();
      ::freopen("/dev/null", "w", stderr);
      ::execl(cli.c_str(), cli.c_str(), "train", kcfg.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 2000 && !fs::exists(s.dir / "killed" / "checkpoint" / "trainer_state.json"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CliRun k2 = run_cli("train " + kcfg + " --resume");
    REQUIRE_MESSAGE(k2.rc == 0, k2.err);
    CHECK(adapter_bytes(s.dir / "killed") == want);
    // SIGINT mid-run (a longer run, so the signal lands before its end): the handler lets the step
    // finish, checkpoints, exits 130; --resume ends with the adapter of an uninterrupted run.
    CliRun f80 = run_cli("train " + s.config("full80", 80, 1));
    REQUIRE_MESSAGE(f80.rc == 0, f80.err);
    std::string icfg = s.config("sigint", 80, 1);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::string cli = cli_path();
      ::freopen("/dev/null", "w", stderr);
      ::execl(cli.c_str(), cli.c_str(), "train", icfg.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 20000 && !fs::exists(s.dir / "sigint" / "checkpoint" / "trainer_state.json"); ++i)
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    ::kill(pid, SIGINT);
    status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE_MESSAGE(WEXITSTATUS(status) == 130, "exit status ", WEXITSTATUS(status),
                    " (0: the run ended before SIGINT)");
    CHECK_FALSE(fs::exists(s.dir / "sigint" / "adapter"));
    CliRun i2 = run_cli("train " + icfg + " --resume");
    REQUIRE_MESSAGE(i2.rc == 0, i2.err);
    CHECK(adapter_bytes(s.dir / "sigint") == adapter_bytes(s.dir / "full80"));
    // --resume with no checkpoint is a clear error.
    CliRun none = run_cli("train " + s.config("fresh", 12, 3) + " --resume");
    CHECK(none.rc != 0);
    CHECK(none.err.find("no checkpoint") != std::string::npos);
  }

  TEST_CASE("cli: train in f16 with a forced overflow skips steps, logs loss_scale and still lowers the loss") {
    TrainSetup s;
    CliRun r = run_cli("train " + s.config("f16", 40, 20) +
                       " --set training.precision=f16 --set training.loss_scale_init=1e8");
    REQUIRE_MESSAGE(r.rc == 0, r.err);
    CHECK((r.out + r.err).find("f16 gradients overflowed at loss scale 1e+08") != std::string::npos);
    int skipped = 0, lines = 0;
    double last_scale = 0;
    std::istringstream metrics(slurp(s.dir / "f16" / "metrics.jsonl"));
    for (std::string line; std::getline(metrics, line);) {
      auto j = nlohmann::json::parse(line);
      if (!j.contains("loss_scale")) continue;  // eval lines
      ++lines;
      skipped += j["skipped"].get<bool>();
      last_scale = j["loss_scale"].get<double>();
    }
    CHECK(lines >= 1);
    CHECK(skipped >= 1);
    CHECK(last_scale < 1e8);
    // The checkpoint carries the scaler's state, so --resume continues with the same scale.
    auto st = nlohmann::json::parse(slurp(s.dir / "f16" / "checkpoint" / "trainer_state.json"));
    CHECK(st.dump().find("\"loss_scale\"") != std::string::npos);
    MESSAGE(fmt::format("f16 CLI run: {} of {} logged steps skipped, last scale {:g}", skipped, lines, last_scale));
    const size_t at = r.out.find("before ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stod(r.out.substr(r.out.find("after ") + 6)) < std::stod(r.out.substr(at + 7)));
  }

  TEST_CASE("cli: a non-finite loss stops training and keeps the last good checkpoint") {
    TrainSetup s;
    std::string cfg = s.config("nan", 12, 1, "");
    CliRun r =
        run_cli("train " + cfg + " --set training.optimizer=sgd --set training.lr=1e30 --set training.max_grad_norm=0");
    CHECK(r.rc == 1);
    CHECK(r.err.find("non-finite") != std::string::npos);
    CHECK(r.err.find("the last checkpoint") != std::string::npos);
    CHECK(!fs::exists(s.dir / "nan" / "adapter"));
    if (fs::exists(s.dir / "nan" / "checkpoint" / "trainer_state.json")) {
      auto st = nlohmann::json::parse(slurp(s.dir / "nan" / "checkpoint" / "trainer_state.json"));
      auto t = safetensors::load_file((s.dir / "nan" / "checkpoint" / "trainer_state.safetensors").string());
      for (auto& [k, v] : t)
        for (float x : v.to_vector<float>()) REQUIRE(std::isfinite(x));
      CHECK(st["global_step"].get<int64_t>() >= 1);
    }
  }

  TEST_CASE("cli: config errors name the key, suggest the nearest one and exit non-zero") {
    TrainSetup s;
    auto bad = [&](const std::string& yaml_extra, const std::string& sets, const std::string& needle) {
      std::string cfg = s.config("bad", 4, 0, yaml_extra);
      CliRun r = run_cli("train " + cfg + " " + sets);
      CAPTURE(r.err);
      CHECK(r.rc != 0);
      // The error is one line (notes about the toy fixture's config may precede it).
      size_t at = r.err.find("[rankforge] ");
      REQUIRE(at != std::string::npos);
      std::string line = r.err.substr(at);
      CHECK(line.find(needle) != std::string::npos);
      CHECK(std::count(line.begin(), line.end(), '\n') == 1);
      CHECK(!fs::exists(s.dir / "bad" / "adapter"));
    };
    bad("trainng:\n  lr: 1\n", "", "unknown key 'trainng'");
    bad("trainng:\n  lr: 1\n", "", "did you mean 'training'");
    bad("", "--set training.lrr=1", "did you mean 'training.lr'");
    bad("", "--set training.batch_size=abc",
        "--set 'training.batch_size=abc': training.batch_size: 'abc' is not an integer");
    bad("", "--set adapter.target_modules=[c_atn]", "close names: c_attn");
    bad("", "--set training.schedule=cosinus", "unknown schedule 'cosinus'");
    bad("", "--set data.train=/nonexistent/x.jsonl", "/nonexistent/x.jsonl");
  }
}
