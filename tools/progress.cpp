// Training progress: one bar line redrawn with '\r' on a terminal, plain log lines elsewhere.
#include "tools/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace rf::tools {

namespace {

constexpr int kBarWidth = 10;
constexpr size_t kTtyColumns = 100;  // longer lines would wrap and break the in-place redraw

// Control characters in user text would corrupt the redraw (tty) or split a log line (plain).
std::string one_line(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 32 || c == 127) c = ' ';
  return out;
}

std::string format_line(const ProgressStats& s, double eta_s) {
  std::string line;
  if (s.total > 0) {
    double frac = std::clamp(double(s.step) / double(s.total), 0.0, 1.0);
    int filled = int(frac * kBarWidth);
    line = fmt::format("step {}/{} [{}{}] {}%", s.step, s.total, std::string(size_t(filled), '#'),
                       std::string(size_t(kBarWidth - filled), '.'), int(frac * 100));
  } else {
    line = fmt::format("step {}", s.step);
  }
  // Fixed decimals read best for ordinary losses; huge (diverged) ones switch to exponent form.
  if (std::isfinite(s.loss) && std::abs(s.loss) < 1e4) line += fmt::format(" loss {:.4f}", s.loss);
  else line += fmt::format(" loss {:.4g}", s.loss);
  line += fmt::format(" lr {:.2e}", s.lr);
  if (s.tokens_per_s > 0 && std::isfinite(s.tokens_per_s)) line += fmt::format(" {:.0f} tok/s", s.tokens_per_s);
  if (s.total > 0) line += fmt::format(" ETA {}", Progress::format_eta(eta_s));
  if (!s.extra.empty()) line += fmt::format(" {}", one_line(s.extra));
  return line;
}

// Cuts at most max bytes without splitting a UTF-8 sequence.
std::string truncate_columns(std::string s, size_t max) {
  if (s.size() <= max) return s;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s;
}

}  // namespace

Progress::Progress(std::FILE* out, int tty, int64_t plain_every)
    : out_(out ? out : stderr),
      tty_(tty < 0 ? ::isatty(::fileno(out ? out : stderr)) != 0 : tty != 0),
      plain_every_(std::max<int64_t>(1, plain_every)),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::update(const ProgressStats& s) {
  auto now = std::chrono::steady_clock::now();
  if (start_step_ < 0) {
    start_ = now;
    start_step_ = s.step;
  }
  ++updates_;
  // Average time per step since the first update; unknown until a step has passed.
  double eta = NAN;
  int64_t done = s.step - start_step_;
  if (done > 0 && s.total > 0) {
    double per_step = std::chrono::duration<double>(now - start_).count() / double(done);
    eta = per_step * double(std::max<int64_t>(0, s.total - s.step));
  } else if (s.total > 0 && s.step >= s.total) {
    eta = 0;
  }
  std::string line = format_line(s, eta);
  if (tty_) {
    std::fputs(fmt::format("\r{}\x1b[K", truncate_columns(line, kTtyColumns)).c_str(), out_);
    bar_open_ = true;
  } else if (updates_ % plain_every_ == 0 || (s.total > 0 && s.step == s.total)) {
    std::fputs((line + "\n").c_str(), out_);
  }
  std::fflush(out_);
}

void Progress::message(const std::string& line) {
  std::string text = line;
  if (text.empty() || text.back() != '\n') text += '\n';
  // Clear the bar first; the next update() draws it again below the message.
  if (tty_ && bar_open_) text = fmt::format("\r\x1b[K{}", text);
  bar_open_ = false;
  std::fputs(text.c_str(), out_);
  std::fflush(out_);
}

void Progress::finish() {
  if (tty_ && bar_open_) std::fputc('\n', out_);
  bar_open_ = false;
  std::fflush(out_);
}

std::string Progress::format_eta(double seconds) {
  // Past ~30 million years an estimate means nothing, and llround would overflow near 1e18.
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e15) return "?";
  long long t = std::llround(seconds);
  long long h = t / 3600, m = t / 60 % 60, sec = t % 60;
  return h > 0 ? fmt::format("{}:{:02}:{:02}", h, m, sec) : fmt::format("{}:{:02}", m, sec);
}

}  // namespace rf::tools
