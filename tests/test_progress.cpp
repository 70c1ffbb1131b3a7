// Progress: its output captured in a tmpfile(), with the tty mode and the terminal width forced.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/cli_util.h"
#include "tools/progress.h"

using rf::tools::Progress;
using rf::tools::ProgressStats;

using rf::test::lines_of;
using rf::test::ScopedEnv;

namespace {

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

// The text of each in-place redraw ("\r<text>\x1b[K"), without the clears before a message.
std::vector<std::string> redraws(const std::string& out) {
  std::vector<std::string> segs;
  for (size_t pos = out.find('\r'); pos != std::string::npos; pos = out.find('\r', pos + 1)) {
    size_t end = out.find("\x1b[K", pos + 1);
    if (end != std::string::npos && end > pos + 1) segs.push_back(out.substr(pos + 1, end - pos - 1));
  }
  return segs;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("progress: plain mode prints every N updates and the last step") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p(f, 0, 3);
      CHECK_FALSE(p.tty());
      for (int step = 1; step <= 10; ++step) {
        p.update({step, 10, 2.5 - step * 0.1, 1e-4, 1234, "eval_loss=2.31"});
        if (step == 5) p.message("eval at 5");
      }
    }
    std::string out = read_all(f);
    std::fclose(f);
    CHECK(out.find('\r') == std::string::npos);
    CHECK(out.find('\x1b') == std::string::npos);
    std::vector<std::string> lines = lines_of(out);
    REQUIRE(lines.size() == 5);  // updates 3, 6, 9, the final step 10, and the message
    CHECK(lines[0].rfind("step 3/10 ", 0) == 0);
    CHECK(lines[1] == "eval at 5");
    CHECK(lines[2].rfind("step 6/10 ", 0) == 0);
    CHECK(lines[3].rfind("step 9/10 ", 0) == 0);
    const std::string& last = lines[4];
    CHECK(last.rfind("step 10/10 [##########] 100%", 0) == 0);
    for (const char* field : {"loss 1.5000", "lr 1.00e-04", "1234 tok/s", "ETA ", "eval_loss=2.31"})
      CHECK_MESSAGE(last.find(field) != std::string::npos, field << " missing in: " << last);
    CHECK(out.back() == '\n');
  }

  TEST_CASE("progress: plain mode with an unknown total and control characters") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p(f, 0, 1);
      p.update({7, 0, NAN, 0, 0, "a\nb\rc"});
    }
    std::string out = read_all(f);
    std::fclose(f);
    CHECK(out.rfind("step 7 loss nan", 0) == 0);
    CHECK(out.find("ETA") == std::string::npos);
    CHECK(out.find("a b c") != std::string::npos);
    CHECK(lines_of(out).size() == 1);
  }

  TEST_CASE("progress: ETA is the average time per step times the steps left") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p(f, 0, 1);
      p.update({0, 1000, 1, 1e-3, 0, ""});
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      p.update({1, 1000, 1, 1e-3, 0, ""});
    }
    std::vector<std::string> lines = lines_of(read_all(f));
    std::fclose(f);
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].find("ETA ?") != std::string::npos);  // no step timed yet
    std::smatch m;
    REQUIRE(std::regex_search(lines[1], m, std::regex("ETA (\\d+):(\\d\\d)")));
    int seconds = std::stoi(m[1]) * 60 + std::stoi(m[2]);
    CHECK(seconds >= 49);   // 999 steps left at >= 50 ms each
    CHECK(seconds <= 600);  // generous for a loaded machine
  }

  TEST_CASE("progress: tty mode redraws one line in place") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p(f, 1, 10, 100);
      CHECK(p.tty());
      CHECK(p.columns() == 100);
      p.update({1, 300, 2.3142, 1e-4, 1234, ""});
      p.update({2, 300, 2.3, 1e-4, 1234, std::string(200, 'x')});
      p.message("checkpoint saved");
      p.update({3, 300, 2.2, 1e-4, 1234, "eval_loss=2.31"});
      p.finish();
      p.finish();  // idempotent, and the destructor adds nothing
    }
    std::string out = read_all(f);
    std::fclose(f);
    CHECK(out.rfind("\rstep 1/300 [", 0) == 0);
    CHECK(out.find("\x1b[K") != std::string::npos);
    CHECK(std::regex_search(out, std::regex("ETA (\\?|\\d+:\\d\\d)")));
    CHECK(out.find("\r\x1b[Kcheckpoint saved\n\rstep 3/300") != std::string::npos);
    CHECK(out.find("eval_loss=2.31\x1b[K\n") != std::string::npos);
    CHECK(out.size() >= 2);
    CHECK(out.substr(out.size() - 2) != "\n\n");  // finish() ended the bar exactly once
    // Each redraw fits the terminal, its last column left free.
    for (const std::string& seg : redraws(out)) CHECK(seg.size() <= 99);
  }

  TEST_CASE("progress: format_eta") {
    CHECK(Progress::format_eta(0) == "0:00");
    CHECK(Progress::format_eta(65) == "1:05");
    CHECK(Progress::format_eta(3723) == "1:02:03");
    CHECK(Progress::format_eta(59.4) == "0:59");
    CHECK(Progress::format_eta(36000) == "10:00:00");
    CHECK(Progress::format_eta(NAN) == "?");
    CHECK(Progress::format_eta(INFINITY) == "?");
    CHECK(Progress::format_eta(-1) == "?");
  }

  TEST_CASE("progress: the tty line fits the terminal width, dropping the least useful fields first") {
    ProgressStats st{123, 3000, 2.3142, 1e-4, 12345, "eval_loss=2.31"};
    std::string full = rf::tools::format_progress_line(st, 65);
    CHECK(full == "step 123/3000 [..........] 4% loss 2.3142 lr 1.00e-04 12345 tok/s ETA 1:05 eval_loss=2.31");
    CHECK(rf::tools::format_progress_line(st, 65, 200) == full);
    // Narrower: extra goes first (cut visibly where a part fits), then tok/s, lr and the bar; step,
    // percentage, loss and ETA stay.
    CHECK(rf::tools::format_progress_line(st, 65, 90) == full);
    CHECK(rf::tools::format_progress_line(st, 65, 75) ==
          "step 123/3000 [..........] 4% loss 2.3142 lr 1.00e-04 12345 tok/s ETA 1:05");
    CHECK(rf::tools::format_progress_line(st, 65, 65) ==
          "step 123/3000 [..........] 4% loss 2.3142 lr 1.00e-04 ETA 1:05");
    CHECK(rf::tools::format_progress_line(st, 65, 50) == "step 123/3000 [..........] 4% loss 2.3142 ETA 1:05");
    CHECK(rf::tools::format_progress_line(st, 65, 49) == "step 123/3000 4% loss 2.3142 ETA 1:05 eval_loss..");
    CHECK(rf::tools::format_progress_line(st, 65, 45) ==
          "step 123/3000 4% loss 2.3142 ETA 1:05");  // too little room for it
    CHECK(rf::tools::format_progress_line(st, 65, 20) == "step 123/3000 4% los");
    for (size_t w = 1; w <= 120; ++w) CHECK(rf::tools::format_progress_line(st, 65, w).size() <= w);

    // At 50 columns every redraw takes at most 49 characters: no line wraps, so none is left behind.
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p(f, 1, 10, 50);
      for (int step = 1; step <= 20; ++step) p.update({step, 3000, 2.5, 1e-4, 123456, std::string(80, 'x')});
      p.eval_progress(3, 10);
    }
    std::string out = read_all(f);
    std::fclose(f);
    std::vector<std::string> segs = redraws(out);
    REQUIRE(segs.size() == 21);
    for (const std::string& seg : segs) {
      CHECK(seg.size() <= 49);
      CHECK(seg.find('\n') == std::string::npos);
    }
    CHECK(segs[19].rfind("step 20/3000 [..........] 0% loss 2.5000 ETA ", 0) == 0);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);  // only finish() ends the line
  }

  TEST_CASE("progress: the terminal width comes from the fd, else $COLUMNS, else 80") {
    std::FILE* f = std::tmpfile();  // not a terminal: TIOCGWINSZ fails
    REQUIRE(f);
    {
      ScopedEnv cols("COLUMNS", "57");
      CHECK(Progress::terminal_columns(::fileno(f)) == 57);
      Progress p(f, 1);
      CHECK(p.columns() == 57);
      p.update({1, 10, 2.0, 1e-3, 999999, std::string(100, 'y')});
      CHECK(Progress(f, 1, 10, 33).columns() == 33);  // the override wins
    }
    for (const char* bad : {"", "abc", "0", "-5", "12x"}) {
      ScopedEnv cols("COLUMNS", bad);
      CHECK_MESSAGE(Progress::terminal_columns(::fileno(f)) == 80, "COLUMNS=" << bad);
    }
    {
      ScopedEnv cols("COLUMNS", nullptr);
      CHECK(Progress::terminal_columns(::fileno(f)) == 80);
    }
    std::string out = read_all(f);
    std::fclose(f);
    std::vector<std::string> segs = redraws(out);
    REQUIRE(segs.size() == 1);
    CHECK(segs[0].size() == 56);
  }

  TEST_CASE("progress: eval_progress redraws an eval line on a tty and prints nothing in plain mode") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
      Progress p(f, 1, 10, 100);
      p.update({4, 40, 2.5, 1e-4, 0, ""});
      for (int b = 0; b <= 10; ++b) p.eval_progress(b, 10);
      p.message("[eval] step 4: eval_loss 2.3");
      p.eval_progress(2, 0);  // unknown total
      p.update({5, 40, 2.4, 1e-4, 0, ""});
    }
    std::string out = read_all(f);
    std::fclose(f);
    std::vector<std::string> segs = redraws(out);
    REQUIRE(segs.size() == 1 + 11 + 1 + 1);
    CHECK(segs[1].rfind("eval 0/10 batches [..........] 0% ETA ?", 0) == 0);
    CHECK(segs[4].rfind("eval 3/10 batches [###.......] 30% ETA ", 0) == 0);
    CHECK(std::regex_search(segs[4], std::regex("ETA \\d+:\\d\\d$")));  // timed from the first call
    CHECK(segs[11].rfind("eval 10/10 batches [##########] 100% ETA 0:00", 0) == 0);
    CHECK(segs[12] == "eval 2 batches");
    CHECK(segs[13].rfind("step 5/40 ", 0) == 0);
    // The eval line is replaced in place, and cleared before the message.
    CHECK(out.find("\r\x1b[K[eval] step 4: eval_loss 2.3\n") != std::string::npos);
    CHECK(std::count(out.begin(), out.end(), '\n') == 2);  // the message and finish()

    std::FILE* g = std::tmpfile();
    REQUIRE(g);
    {
      Progress p(g, 0, 1);
      for (int b = 0; b <= 10; ++b) p.eval_progress(b, 10);
    }
    CHECK(read_all(g).empty());
    std::fclose(g);
  }

}  // TEST_SUITE
