#pragma once
// Training progress: a one-line bar redrawn in place on a terminal, plain lines otherwise (CI logs).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace rf::tools {

struct ProgressStats {
  int64_t step = 0, total = 0;  // optimizer steps done / planned
  double loss = 0, lr = 0;
  double tokens_per_s = 0;
  std::string extra;            // e.g. "eval_loss=2.31"
};

class Progress {
 public:
  // tty: -1 detects with isatty(fileno(out)). plain_every: in plain mode, print every N updates (and the last).
  explicit Progress(std::FILE* out = stderr, int tty = -1, int64_t plain_every = 10);
  ~Progress();  // ends the bar line
  void update(const ProgressStats& s);
  void message(const std::string& line);  // printed above the bar (eval results, checkpoints)
  void finish();
  bool tty() const { return tty_; }
  // "1:02:03" / "4:05" / "?" (negative or non-finite)
  static std::string format_eta(double seconds);

 private:
  std::FILE* out_;
  bool tty_;
  int64_t plain_every_, updates_ = 0;
  bool bar_open_ = false;
  std::chrono::steady_clock::time_point start_;
  int64_t start_step_ = -1;
};

}  // namespace rf::tools
