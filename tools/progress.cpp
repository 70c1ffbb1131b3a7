// Training progress: one bar line redrawn with '\r' on a terminal, plain log lines elsewhere.
#include "tools/progress.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace rf::tools {

namespace {

constexpr int kBarWidth = 10;

// Control characters in user text would corrupt the redraw (tty) or split a log line (plain).
std::string one_line(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 32 || c == 127) c = ' ';
  return out;
}

// Characters as a terminal counts them (UTF-8 continuation bytes take no column; wide glyphs are rare here).
size_t width(const std::string& s) {
  return size_t(
      std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// Keeps the first max characters without splitting a UTF-8 sequence.
std::string truncate_columns(std::string s, size_t max) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && chars++ == max) {
      s.resize(i);
      break;
    }
  return s;
}

std::string bar(double frac) {
  int filled = int(std::clamp(frac, 0.0, 1.0) * kBarWidth);
  return fmt::format("[{}{}]", std::string(size_t(filled), '#'), std::string(size_t(kBarWidth - filled), '.'));
}

// A field of a progress line; drop > 0 marks the optional ones, the highest dropped first when narrow.
struct Field {
  std::string text;
  int drop = 0;
};

// Joins the fields that fit in max characters (0: all), dropping optional ones by rank, then appends
// `extra` in what is left and cuts whatever still does not fit.
std::string fit_fields(std::vector<Field> fields, const std::string& extra, size_t max) {
  auto join = [&] {
    std::string line;
    for (const Field& f : fields) line += fmt::format("{}{}", line.empty() ? "" : " ", f.text);
    return line;
  };
  std::string line = join();
  while (max > 0 && width(line) > max) {
    auto it =
        std::max_element(fields.begin(), fields.end(), [](const Field& a, const Field& b) { return a.drop < b.drop; });
    if (it == fields.end() || it->drop == 0) break;
    fields.erase(it);
    line = join();
  }
  // extra whole, or cut with a visible ".." where a useful part fits (a silently cut "eval_loss=2.31"
  // would read as "eval_loss=2"), or not at all.
  const std::string e = one_line(extra);
  const size_t room = max > width(line) + 1 ? max - width(line) - 1 : 0;
  if (!e.empty() && (max == 0 || width(e) <= room))
    line += fmt::format(" {}", e);
  else if (!e.empty() && room >= 8)
    line += fmt::format(" {}..", truncate_columns(e, room - 2));
  return max > 0 ? truncate_columns(line, max) : line;
}

}  // namespace

std::string format_progress_line(const ProgressStats& s, double eta_s, size_t columns) {
  std::vector<Field> f;
  if (s.total > 0) {
    double frac = std::clamp(double(s.step) / double(s.total), 0.0, 1.0);
    f = {{fmt::format("step {}/{}", s.step, s.total)}, {bar(frac), 1}, {fmt::format("{}%", int(frac * 100))}};
  } else {
    f = {{fmt::format("step {}", s.step)}};
  }
  // Fixed decimals read best for ordinary losses; huge (diverged) ones switch to exponent form.
  if (std::isfinite(s.loss) && std::abs(s.loss) < 1e4)
    f.push_back({fmt::format("loss {:.4f}", s.loss)});
  else
    f.push_back({fmt::format("loss {:.4g}", s.loss)});
  f.push_back({fmt::format("lr {:.2e}", s.lr), 2});
  if (s.tokens_per_s > 0 && std::isfinite(s.tokens_per_s))
    f.push_back({fmt::format("{:.0f} tok/s", s.tokens_per_s), 3});
  if (s.total > 0) f.push_back({fmt::format("ETA {}", Progress::format_eta(eta_s))});
  return fit_fields(std::move(f), s.extra, columns);
}

int Progress::terminal_columns(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    char* end = nullptr;
    long v = std::strtol(c, &end, 10);
    if (end != c && *end == '\0' && v > 0 && v <= 100000) return int(v);
  }
  return 80;
}

int Progress::columns() const { return columns_ > 0 ? columns_ : terminal_columns(::fileno(out_)); }

Progress::Progress(std::FILE* out, int tty, int64_t plain_every, int columns)
    : out_(out ? out : stderr),
      tty_(tty < 0 ? ::isatty(::fileno(out ? out : stderr)) != 0 : tty != 0),
      plain_every_(std::max<int64_t>(1, plain_every)),
      columns_(std::max(0, columns)),
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
  eval_active_ = false;
  if (tty_) {
    draw(format_progress_line(s, eta, line_max()));
  } else if (updates_ % plain_every_ == 0 || (s.total > 0 && s.step == s.total)) {
    std::fputs((format_progress_line(s, eta) + "\n").c_str(), out_);
    std::fflush(out_);
  }
}

// The last column stays empty: a line that fills it leaves some terminals in a pending wrap that the
// next "\r" does not undo, and every redraw would stack a line.
size_t Progress::line_max() const { return size_t(std::max(1, columns() - 1)); }

void Progress::draw(const std::string& line) {
  std::fputs(fmt::format("\r{}\x1b[K", line).c_str(), out_);
  bar_open_ = true;
  std::fflush(out_);
}

void Progress::eval_progress(int64_t done, int64_t total) {
  if (!tty_) return;
  auto now = std::chrono::steady_clock::now();
  if (!eval_active_ || done < eval_last_) {  // a new evaluation: its pace is timed from here
    eval_active_ = true;
    eval_start_ = now;
    eval_first_ = done;
  }
  eval_last_ = done;
  std::vector<Field> f;
  if (total > 0) {
    double frac = std::clamp(double(done) / double(total), 0.0, 1.0);
    double eta = NAN;
    if (done > eval_first_)
      eta = std::chrono::duration<double>(now - eval_start_).count() / double(done - eval_first_) *
            double(std::max<int64_t>(0, total - done));
    else if (done >= total)
      eta = 0;
    f = {{fmt::format("eval {}/{} batches", done, total)},
         {bar(frac), 1},
         {fmt::format("{}%", int(frac * 100))},
         {fmt::format("ETA {}", format_eta(eta)), 2}};
  } else {
    f = {{fmt::format("eval {} batches", done)}};
  }
  draw(fit_fields(std::move(f), "", line_max()));
}

void Progress::message(const std::string& line) {
  eval_active_ = false;
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
