// Charts are checked by decoding the PNGs (stb_image) and looking where the series colours landed.
// (Progress: tests/test_progress.cpp.)
#include <doctest/doctest.h>
#include <stb_image.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "tools/plot.h"

namespace fs = std::filesystem;
using rf::tools::BarChart;
using rf::tools::LineChart;
using rf::tools::Series;

namespace {

constexpr uint32_t kBlue = 0x1f77b4, kOrange = 0xff7f0e;  // the first two palette colours

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("rf_plot_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

struct Image {
  int w = 0, h = 0, channels = 0;
  std::vector<uint8_t> px;
  bool is(int x, int y, uint32_t rgb) const {
    const uint8_t* p = &px[(size_t(y) * size_t(w) + size_t(x)) * size_t(channels)];
    return p[0] == (rgb >> 16 & 0xff) && p[1] == (rgb >> 8 & 0xff) && p[2] == (rgb & 0xff);
  }
  // Pixels of exactly rgb in [x0, x1) x [y0, y1).
  int count(uint32_t rgb, int x0, int y0, int x1, int y1) const {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) n += is(x, y, rgb);
    return n;
  }
  int count(uint32_t rgb) const { return count(rgb, 0, 0, w, h); }
  int column_count(uint32_t rgb, int x) const { return count(rgb, x, 0, x + 1, h); }
  // Mean row of the rgb pixels in column x, or -1 when there are none.
  double column_mean_row(uint32_t rgb, int x) const {
    double sum = 0;
    int n = 0;
    for (int y = 0; y < h; ++y)
      if (is(x, y, rgb)) sum += y, ++n;
    return n ? sum / n : -1;
  }
  // First and last column holding rgb.
  std::pair<int, int> column_span(uint32_t rgb) const {
    int first = -1, last = -1;
    for (int x = 0; x < w; ++x)
      if (column_count(rgb, x) > 0) {
        if (first < 0) first = x;
        last = x;
      }
    return {first, last};
  }
};

Image load(const std::string& path) {
  Image img;
  unsigned char* data = stbi_load(path.c_str(), &img.w, &img.h, &img.channels, 0);
  REQUIRE_MESSAGE(data != nullptr, "cannot decode " << path);
  img.px.assign(data, data + size_t(img.w) * size_t(img.h) * size_t(img.channels));
  stbi_image_free(data);
  return img;
}

Series line(const std::string& name, std::vector<double> x, std::vector<double> y, uint32_t rgb = 0) {
  return Series{name, std::move(x), std::move(y), rgb};
}

std::vector<double> range_x(int n) {
  std::vector<double> x;
  for (int i = 0; i < n; ++i) x.push_back(i);
  return x;
}

// Relative height (0 = bottom end, 1 = top end) of the line at the middle column between its ends.
double middle_height(const Image& img, uint32_t rgb) {
  auto [first, last] = img.column_span(rgb);
  double y_first = img.column_mean_row(rgb, first + 2), y_last = img.column_mean_row(rgb, last - 2);
  double y_mid = img.column_mean_row(rgb, (first + last) / 2);
  REQUIRE(y_mid >= 0);
  return (y_first - y_mid) / (y_first - y_last);
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("plot: line chart has the requested size, RGB") {
    TempDir tmp;
    LineChart c{"loss", "step", "value", {line("train", {0, 1, 2}, {3, 2, 1})}};
    c.width = 640;
    c.height = 400;
    write_png(c, tmp.file("a.png"));
    Image img = load(tmp.file("a.png"));
    CHECK(img.w == 640);
    CHECK(img.h == 400);
    CHECK(img.channels == 3);
    CHECK(img.count(0xffffff) > img.w * img.h / 2);  // white background
    CHECK(img.count(kBlue) > 0);                     // first palette colour for rgb = 0
  }

  TEST_CASE("plot: a rising line goes from lower left to upper right") {
    TempDir tmp;
    // Unnamed: no legend swatch, so every pixel of the colour belongs to the line.
    LineChart c{"", "", "", {line("", range_x(11), range_x(11), 0xd62728)}};
    write_png(c, tmp.file("rise.png"));
    Image img = load(tmp.file("rise.png"));
    REQUIRE(img.w == 900);
    REQUIRE(img.h == 540);
    uint32_t red = 0xd62728;
    int w3 = img.w / 3, h3 = img.h / 3;
    CHECK(img.count(red, 0, 2 * h3, w3, img.h) > 50);          // lower left
    CHECK(img.count(red, 2 * w3, 0, img.w, h3) > 50);          // upper right
    CHECK(img.count(red, 0, 0, w3, h3) == 0);                  // upper left
    CHECK(img.count(red, 2 * w3, 2 * h3, img.w, img.h) == 0);  // lower right
    // Along the path: the line spans most of the width and climbs column by column, linearly.
    auto [first, last] = img.column_span(red);
    CHECK(last - first > img.w / 2);
    double prev = 1e9;
    int rising = 0, steps = 0;
    for (int x = first + 3; x <= last - 3; x += 10, ++steps) {
      double row = img.column_mean_row(red, x);
      REQUIRE(row >= 0);  // no hole in a line without missing points
      rising += row < prev;
      prev = row;
    }
    CHECK(rising == steps);
    CHECK(middle_height(img, red) == doctest::Approx(0.5).epsilon(0.05));
    // 20001 points on the same line (many per pixel column) draw the same line.
    std::vector<double> dense;
    for (int i = 0; i <= 20000; ++i) dense.push_back(i * 10.0 / 20000);
    c.series[0] = line("", dense, dense, red);
    write_png(c, tmp.file("dense.png"));
    Image d = load(tmp.file("dense.png"));
    CHECK(d.count(red) == doctest::Approx(img.count(red)).epsilon(0.05));
    CHECK(d.count(red, 0, 0, w3, h3) == 0);
    CHECK(d.column_span(red) == img.column_span(red));
  }

  TEST_CASE("plot: thinning a dense series keeps its spikes") {
    TempDir tmp;
    std::vector<double> y(20000, 0.0);
    for (int k = 0; k < 20; ++k) y[size_t(500 + 997 * k)] = 1;  // 20 one-step spikes, ~25 points per column
    LineChart c{"", "", "", {line("", range_x(20000), y, 0xd62728)}};
    write_png(c, tmp.file("spikes.png"));
    Image img = load(tmp.file("spikes.png"));
    int runs = 0;
    for (int x = 0, prev = 0; x < img.w; ++x) {
      int here = img.count(0xd62728, x, 0, x + 1, img.h / 3) > 0;
      runs += here && !prev;
      prev = here;
    }
    CHECK(runs == 20);
  }

  TEST_CASE("plot: two series produce both palette colours and a legend") {
    TempDir tmp;
    LineChart c{"two", "x", "y", {line("up", range_x(20), range_x(20)), line("down", range_x(20), {})}};
    for (int i = 19; i >= 0; --i) c.series[1].y.push_back(i);
    write_png(c, tmp.file("two.png"));
    Image img = load(tmp.file("two.png"));
    CHECK(img.count(kBlue) > 100);
    CHECK(img.count(kOrange) > 100);
    // The falling (orange) series owns the upper left, the rising (blue) one does not get there.
    CHECK(img.count(kOrange, 0, 0, img.w / 3, img.h / 3) > 20);
    CHECK(img.count(kBlue, 0, 0, img.w / 3, img.h / 3) == 0);
  }

  TEST_CASE("plot: a non-finite point breaks the line, the rest is drawn") {
    TempDir tmp;
    std::vector<double> y = range_x(11);
    y[5] = std::nan("");
    LineChart c{"", "", "", {line("", range_x(11), y, 0x2ca02c)}};
    REQUIRE_NOTHROW(write_png(c, tmp.file("nan.png")));
    Image img = load(tmp.file("nan.png"));
    uint32_t green = 0x2ca02c;
    auto [first, last] = img.column_span(green);
    REQUIRE(first >= 0);
    CHECK(last - first > img.w / 2);  // both halves drawn
    // Points 4 and 6 are not joined: no colour in the middle tenth of the span.
    int mid = (first + last) / 2, half_gap = (last - first) / 20;
    CHECK(img.count(green, mid - half_gap, 0, mid + half_gap, img.h) == 0);
    CHECK(img.count(green, first, 0, mid - 3 * half_gap, img.h) > 50);
    CHECK(img.count(green, mid + 3 * half_gap, 0, last, img.h) > 50);
  }

  TEST_CASE("plot: log_y straightens an exponential; a y <= 0 falls back to linear") {
    TempDir tmp;
    std::vector<double> y;
    for (int i = 0; i <= 6; ++i) y.push_back(std::pow(10.0, i));
    LineChart c{"", "", "", {line("", range_x(7), y, 0x9467bd)}};
    c.log_y = true;
    write_png(c, tmp.file("log.png"));
    CHECK(middle_height(load(tmp.file("log.png")), 0x9467bd) == doctest::Approx(0.5).epsilon(0.1));
    c.log_y = false;
    write_png(c, tmp.file("lin.png"));
    CHECK(middle_height(load(tmp.file("lin.png")), 0x9467bd) < 0.05);  // 1000 of 1e6: at the bottom
    c.log_y = true;
    c.series[0].y[0] = 0;
    write_png(c, tmp.file("fallback.png"));
    CHECK(middle_height(load(tmp.file("fallback.png")), 0x9467bd) < 0.05);
  }

  TEST_CASE("plot: degenerate line charts do not crash") {
    TempDir tmp;
    auto draw = [&](LineChart c, const std::string& name) {
      REQUIRE_NOTHROW(write_png(c, tmp.file(name)));
      Image img = load(tmp.file(name));
      CHECK(img.w == c.width);
      CHECK(img.h == c.height);
      return img;
    };
    SUBCASE("no series / empty series: an empty frame") {
      Image a = draw(LineChart{"empty", "x", "y", {}}, "none.png");
      CHECK(a.count(0xffffff) < a.w * a.h);  // frame and "no data" drawn
      draw(LineChart{"empty", "x", "y", {line("s", {}, {})}}, "empty.png");
      draw(LineChart{"", "", "", {line("s", {NAN, 1}, {1, INFINITY})}}, "allnan.png");
    }
    SUBCASE("a single point is a visible dot") {
      Image img = draw(LineChart{"", "", "", {line("", {3}, {7}, 0xd62728)}}, "one.png");
      CHECK(img.count(0xd62728) > 4);
    }
    SUBCASE("all-equal y is a horizontal line") {
      Image img =
          draw(LineChart{"", "", "", {line("", range_x(10), std::vector<double>(10, 2.5), 0xd62728)}}, "flat.png");
      auto [first, last] = img.column_span(0xd62728);
      CHECK(last - first > img.w / 2);
      CHECK(img.column_mean_row(0xd62728, first + 5) == doctest::Approx(img.column_mean_row(0xd62728, last - 5)));
    }
    SUBCASE("huge, tiny and mixed magnitudes") {
      draw(LineChart{"", "", "", {line("a", {0, 1, 2}, {1e300, -1e300, 1.7e308})}}, "huge.png");
      draw(LineChart{"", "", "", {line("a", {1e-300, 2e-300}, {1e-300, 3e-300})}}, "tiny.png");
      draw(LineChart{"", "", "", {line("a", {1e16, 1e16 + 2}, {1, 1 + 1e-12})}}, "close.png");
      LineChart lg{"", "", "", {line("a", {0, 1, 2}, {1e-300, 1, 1e300})}};
      lg.log_y = true;
      draw(lg, "logwide.png");
      lg.series[0].y = {5, 5, 5};
      draw(lg, "logflat.png");
    }
    SUBCASE("small canvases and crowded legends") {
      LineChart c{"a very long title that does not fit in the image at all", "x label", "y label", {}};
      for (int i = 0; i < 30; ++i)
        c.series.push_back(line("series number " + std::to_string(i), {0, 1}, {double(i), 1.0}));
      c.width = 32;
      c.height = 32;
      draw(c, "small.png");
      c.width = 120;
      c.height = 90;
      draw(c, "smallish.png");
    }
    SUBCASE("an impossible size is an error") {
      LineChart c;
      c.width = 0;
      CHECK_THROWS_WITH_AS(write_png(c, tmp.file("zero.png")), doctest::Contains("[plot]"), std::runtime_error);
    }
  }

  TEST_CASE("plot: a series with markers gets a disc on every point, in the legend too") {
    TempDir tmp;
    // A flat line through 5 points: plain, its thickness is the same in every column; with markers the
    // columns of the points hold a disc several times as tall, and only there.
    uint32_t red = 0xd62728;
    LineChart c{"", "", "", {line("", range_x(5), std::vector<double>(5, 1.0), red)}};
    write_png(c, tmp.file("plain.png"));
    c.series[0].markers = true;
    write_png(c, tmp.file("markers.png"));
    Image plain = load(tmp.file("plain.png")), marked = load(tmp.file("markers.png"));
    auto [first, last] = plain.column_span(red);
    REQUIRE(first >= 0);
    int thickness = plain.column_count(red, (first + last) / 2);
    CHECK(thickness > 0);
    std::vector<int> tall;  // columns where the marked line is more than twice the plain thickness
    for (int x = 0; x < marked.w; ++x) {
      CHECK(plain.column_count(red, x) <= thickness);
      if (marked.column_count(red, x) > 2 * thickness) tall.push_back(x);
    }
    int discs = 0;
    for (size_t i = 0; i < tall.size(); ++i) discs += i == 0 || tall[i] > tall[i - 1] + 1;
    CHECK(discs == 5);
    double spacing = (last - first) / 4.0;
    for (int k = 0; k < 5; ++k) {  // a disc centred on each point
      int x = first + int(std::lround(k * spacing));
      CHECK_MESSAGE(std::count_if(tall.begin(), tall.end(), [&](int t) { return std::abs(t - x) <= 6; }) >= 3,
                    "point " << k);
    }
    // The legend swatch of a named series with markers carries a block above its line.
    LineChart named{"", "", "", {line("eval", range_x(5), std::vector<double>(5, 1.0), red)}};
    write_png(named, tmp.file("legend_plain.png"));
    named.series[0].markers = true;
    write_png(named, tmp.file("legend_markers.png"));
    Image lp = load(tmp.file("legend_plain.png")), lm = load(tmp.file("legend_markers.png"));
    auto legend = [&](const Image& img) {
      return img.count(red, img.w / 2, 0, img.w, img.h / 4);
    };  // the line is lower
    CHECK(legend(lp) > 0);
    CHECK(legend(lm) > legend(lp) + 10);
  }

  TEST_CASE("plot: shorten_module_name cuts the middle and keeps the layer index") {
    using rf::tools::shorten_module_name;
    const std::string gpt2 = "transformer.h.11.attn.c_attn";
    CHECK(shorten_module_name(gpt2, 40) == gpt2);
    CHECK(shorten_module_name(gpt2, 28) == gpt2);
    CHECK(shorten_module_name(gpt2, 27) == "transformer..11.attn.c_attn");
    CHECK(shorten_module_name(gpt2, 24) == "transfor..11.attn.c_attn");
    CHECK(shorten_module_name(gpt2, 19) == "tra..11.attn.c_attn");
    CHECK(shorten_module_name(gpt2, 18) == "..11.attn.c_attn");  // no 1- or 2-character start
    CHECK(shorten_module_name(gpt2, 16) == "..11.attn.c_attn");
    CHECK(shorten_module_name(gpt2, 14) == "11.attn.c_attn");
    CHECK(shorten_module_name(gpt2, 12) == "11..c_attn");
    CHECK(shorten_module_name("model.layers.3.self_attn.q_proj", 24) == "mode..3.self_attn.q_proj");
    CHECK(shorten_module_name("model.layers.3.self_attn.q_proj", 12) == "3..q_proj");
    // The first number is the layer index, also when an expert number follows it.
    CHECK(shorten_module_name("model.layers.7.mlp.experts.12.w1", 21) == "..7.mlp.experts.12.w1");
    CHECK(shorten_module_name("model.layers.7.mlp.experts.12.w1", 20) == "7.mlp.experts.12.w1");
    // No index: the start and the last component.
    CHECK(shorten_module_name("encoder.attention.self.query_projection", 25) == "encoder..query_projection");
    CHECK(shorten_module_name("a_single_very_long_component_name", 14) == "a_si..ent_name");
    // Every width: never longer than asked, and the index is there while it fits at all.
    for (size_t n = 0; n <= gpt2.size() + 2; ++n) {
      std::string s = shorten_module_name(gpt2, n);
      CHECK(s.size() <= n);
      if (n >= 2) CHECK_MESSAGE(s.find("11") != std::string::npos, n << ": " << s);
      if (n >= 16 && n < gpt2.size()) CHECK_MESSAGE(s.ends_with("..11.attn.c_attn"), n << ": " << s);  // the start cut
      if (n >= 5 && n < 14) CHECK_MESSAGE(s.starts_with("11.."), n << ": " << s);  // then the middle
    }
  }

  TEST_CASE("plot: bar heights follow the values") {
    TempDir tmp;
    BarChart c{"ranks", "rank", {"a", "b", "c", "d"}, {1, 4, 2, 8}};
    write_png(c, tmp.file("bars.png"));
    Image img = load(tmp.file("bars.png"));
    CHECK(img.w == 900);
    CHECK(img.h == 540);
    // Runs of columns holding the bar colour: one per bar, height = pixels in its middle column.
    std::vector<int> heights;
    for (int x = 0; x < img.w;) {
      if (img.column_count(kBlue, x) == 0) {
        ++x;
        continue;
      }
      int start = x;
      while (x < img.w && img.column_count(kBlue, x) > 0) ++x;
      heights.push_back(img.column_count(kBlue, (start + x) / 2));
    }
    REQUIRE(heights.size() == 4);
    CHECK(heights[0] < heights[2]);
    CHECK(heights[2] < heights[1]);
    CHECK(heights[1] < heights[3]);
    CHECK(double(heights[1]) / heights[3] == doctest::Approx(0.5).epsilon(0.05));
    CHECK(double(heights[0]) / heights[3] == doctest::Approx(0.125).epsilon(0.05));
  }

  TEST_CASE("plot: negative, missing and crowded bars") {
    TempDir tmp;
    BarChart neg{"", "", {"up", "down"}, {3, -2}};
    write_png(neg, tmp.file("neg.png"));
    Image img = load(tmp.file("neg.png"));
    int mid = img.w / 2;
    auto rows = [&](int x0, int x1) {  // topmost and bottommost rows of the bar colour in [x0, x1)
      int top = img.h, bottom = -1;
      for (int y = 0; y < img.h; ++y)
        if (img.count(kBlue, x0, y, x1, y + 1) > 0) top = std::min(top, y), bottom = y;
      return std::pair{top, bottom};
    };
    auto [up_top, up_bottom] = rows(0, mid);
    auto [down_top, down_bottom] = rows(mid, img.w);
    CHECK(up_bottom >= 0);
    CHECK(down_bottom >= 0);
    CHECK(down_top >= up_bottom - 1);  // the negative bar hangs below the baseline
    CHECK(double(down_bottom - down_top) / (up_bottom - up_top) == doctest::Approx(2.0 / 3).epsilon(0.05));

    BarChart odd{"", "", {"x"}, {NAN, INFINITY, 0, 1}};
    CHECK_NOTHROW(write_png(odd, tmp.file("odd.png")));
    CHECK_NOTHROW(write_png(BarChart{"empty", "", {}, {}}, tmp.file("empty.png")));
    CHECK_NOTHROW(write_png(BarChart{"zeros", "", {"a", "b"}, {0, 0}}, tmp.file("zeros.png")));
    BarChart crowd{"crowded", "rank", {}, {}};
    for (int i = 0; i < 300; ++i) {
      crowd.labels.push_back("model.layers." + std::to_string(i) + ".self_attn.q_proj");
      crowd.values.push_back(i % 17);
    }
    REQUIRE_NOTHROW(write_png(crowd, tmp.file("crowd.png")));
    CHECK(load(tmp.file("crowd.png")).w == 900);
  }

  TEST_CASE("plot: write errors name the path and leave no file behind") {
    TempDir tmp;
    LineChart c{"t", "", "", {line("a", {0, 1}, {0, 1})}};
    std::string missing = tmp.file("no_such_dir/chart.png");
    CHECK_THROWS_WITH_AS(write_png(c, missing), doctest::Contains(("[plot] " + missing + ": No such file").c_str()),
                         std::runtime_error);
    CHECK_THROWS_WITH_AS(write_png(BarChart{"", "", {"a"}, {1}}, missing), doctest::Contains("[plot]"),
                         std::runtime_error);
    CHECK_FALSE(fs::exists(missing));
    // A directory in the way: the temp file is written, the rename fails, the temp file is removed.
    fs::create_directories(tmp.path / "taken.png" / "inside");
    CHECK_THROWS_WITH_AS(write_png(c, tmp.file("taken.png")), doctest::Contains("[plot]"), std::runtime_error);
    CHECK(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator{}) == 1);  // only taken.png
    // Overwriting an existing chart works (rename replaces it).
    write_png(c, tmp.file("ok.png"));
    c.width = 500;
    write_png(c, tmp.file("ok.png"));
    CHECK(load(tmp.file("ok.png")).w == 500);
  }

}  // TEST_SUITE
