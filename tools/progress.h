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
  std::string extra;  // e.g. "eval_loss=2.31"
};

class Progress {
 public:
  // tty: -1 detects with isatty(fileno(out)). plain_every: in plain mode, print every N updates (and the last).
  // columns: the terminal width for the tty line; 0 asks the terminal at each redraw (TIOCGWINSZ on out,
  // then $COLUMNS, then 80), so a resized window is followed. Plain lines are never cut.
  explicit Progress(std::FILE* out = stderr, int tty = -1, int64_t plain_every = 10, int columns = 0);
  ~Progress();  // ends the bar line
  void update(const ProgressStats& s);
  // Evaluation progress, for the training loop: call it with done = 0 before the first evaluation batch
  // and with the batches finished after each one (total <= 0 when unknown). On a terminal it redraws
  // the bar line as "eval 3/10 batches [###.......] 30% ETA 0:04" (ETA from this evaluation's pace);
  // the next update() or message() replaces it. Plain output prints nothing: the "[eval] ..." message
  // after the evaluation is the log line, and CI logs stay one line per event.
  void eval_progress(int64_t done, int64_t total);
  void message(const std::string& line);  // printed above the bar (eval results, checkpoints)
  void finish();
  bool tty() const { return tty_; }
  int columns() const;  // the width the tty line is fitted to (the override, else the terminal's)
  // "1:02:03" / "4:05" / "?" (negative or non-finite)
  static std::string format_eta(double seconds);
  // The terminal width of fd: TIOCGWINSZ, else $COLUMNS (if a positive number), else 80.
  static int terminal_columns(int fd);

 private:
  size_t line_max() const;             // characters a tty line may take: columns() - 1
  void draw(const std::string& line);  // tty only: "\r" + the (fitted) line + clear to end of line
  std::FILE* out_;
  bool tty_;
  int64_t plain_every_, updates_ = 0;
  int columns_;
  bool bar_open_ = false;
  std::chrono::steady_clock::time_point start_, eval_start_;
  int64_t start_step_ = -1;
  bool eval_active_ = false;  // eval_progress() drew last; a lower `done` starts a new evaluation
  int64_t eval_first_ = 0, eval_last_ = 0;
};

// The training line for s in at most `columns` characters (0: no limit): tok/s, lr and the bar graphic
// are dropped in that order until the rest fits, `extra` gets what room is left (cut with ".."), and
// only what still does not fit is cut.
std::string format_progress_line(const ProgressStats& s, double eta_seconds, size_t columns = 0);

}  // namespace rf::tools
