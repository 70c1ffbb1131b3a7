// Learning-rate schedules against values written out by hand (methods.md §1.5, §1.9 test 6) and
// the Hugging Face warmup schedules.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "nn/schedule.h"

namespace rf::test {
namespace {

constexpr double kPi = 3.14159265358979323846;

nn::ScheduleOptions opts(nn::ScheduleKind k, int64_t W, int64_t T, double m = 0.0) {
  nn::ScheduleOptions o;
  o.kind = k;
  o.warmup_steps = W;
  o.total_steps = T;
  o.min_lr_ratio = m;
  return o;
}

// MRPC row of methods.md §1.6: W1 = 100, Wr = 50, C = 200, T = 3000, m = 0.1.
nn::ScheduleOptions mrpc() {
  nn::ScheduleOptions o = opts(nn::ScheduleKind::CosineWithRestarts, 100, 3000, 0.1);
  o.cycle_length = 200;
  o.restart_warmup_steps = 50;
  return o;
}

double mult(const nn::ScheduleOptions& o, int64_t t) { return nn::lr_multiplier(o, t); }
doctest::Approx exact(double v) { return doctest::Approx(v).epsilon(1e-12); }

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("schedule: cosine_with_restarts reproduces methods.md 1.5 for MRPC (1.9 test 6)") {
    const nn::ScheduleOptions o = mrpc();
    REQUIRE_NOTHROW(nn::validate(o));
    // t = 0: t < W1 -> 0 / 100
    CHECK(mult(o, 0) == 0.0);
    // t = 99: t < W1 -> 99 / 100
    CHECK(mult(o, 99) == exact(0.99));
    // t = 100: k = 100, n = 0; t < C so no restart warmup -> 0.1 + 0.9*0.5*(1 + cos(pi*(100-100)/2900)) = 1
    CHECK(mult(o, 100) == exact(1.0));
    // t = 150: k = 150 -> 0.1 + 0.9*0.5*(1 + cos(pi*50/2900))
    CHECK(mult(o, 150) == exact(0.1 + 0.9 * 0.5 * (1 + std::cos(kPi * 50.0 / 2900.0))));
    CHECK(mult(o, 150) == doctest::Approx(0.999340036233006).epsilon(1e-12));
    // t = 200: k = 0, n = 1, k < Wr and t >= C -> (0/50) * [...] = 0: the restart drops the lr to 0
    CHECK(mult(o, 200) == 0.0);
    // t = 225: k = 25, n = 1 -> (25/50) * [0.1 + 0.9*0.5*(1 + cos(pi*(1*200 + 50 - 100)/(3000 - 100)))]
    //        = 0.5 * [0.1 + 0.45*(1 + cos(pi*150/2900))]
    CHECK(mult(o, 225) == exact(0.5 * (0.1 + 0.45 * (1 + std::cos(kPi * 150.0 / 2900.0)))));
    CHECK(mult(o, 225) == doctest::Approx(0.497035967571843).epsilon(1e-12));
    // t = 250: k = 50 = Wr, not < Wr -> 0.1 + 0.9*0.5*(1 + cos(pi*(250-100)/2900)): the value the
    // restart warmup was heading for, so the curve is continuous at the end of the restart warmup
    CHECK(mult(o, 250) == exact(0.1 + 0.45 * (1 + std::cos(kPi * 150.0 / 2900.0))));
    CHECK(mult(o, 250) == doctest::Approx(0.994071935143687).epsilon(1e-12));
    CHECK(mult(o, 249) == exact((49.0 / 50.0) * mult(o, 250)));
    // t = 2999: k = 199 -> 0.1 + 0.45*(1 + cos(pi*2899/2900)), just above the floor
    CHECK(mult(o, 2999) == doctest::Approx(0.100000264050032).epsilon(1e-12));
    // t = 3000 = 15 * C: k = 0, n = 15 -> a restart: (0/50) * [...] = 0
    CHECK(mult(o, 3000) == 0.0);
    // t = 3100: k = 100, n = 15 -> 0.1 + 0.45*(1 + cos(pi*3000/2900)); no clamp past T, so the cosine
    // has turned back up above the floor
    CHECK(mult(o, 3100) == exact(0.1 + 0.45 * (1 + std::cos(kPi * 3000.0 / 2900.0))));
    CHECK(mult(o, 3100) == doctest::Approx(0.102637919280538).epsilon(1e-12));
    CHECK(mult(o, 3100) > 0.1);
  }

  TEST_CASE("schedule: cosine_with_restarts without restart warmup and with W1 = C") {
    nn::ScheduleOptions o = mrpc();
    o.restart_warmup_steps = 0;  // k < 0 never holds: plain cosine from W1 on
    CHECK(mult(o, 200) == exact(0.1 + 0.45 * (1 + std::cos(kPi * 100.0 / 2900.0))));
    o = mrpc();
    o.warmup_steps = 200;  // W1 = C: the first restart comes right after the first warmup
    // t = 200: k = 0, n = 1, t >= C -> (0/50) * [...] = 0
    CHECK(mult(o, 199) == exact(199.0 / 200.0));
    CHECK(mult(o, 200) == 0.0);
    // t = 210: k = 10 -> (10/50) * [0.1 + 0.45*(1 + cos(pi*(200 + 50 - 200)/2800))]
    CHECK(mult(o, 210) == exact(0.2 * (0.1 + 0.45 * (1 + std::cos(kPi * 50.0 / 2800.0)))));
    o = mrpc();
    o.warmup_steps = 10;  // W1 < Wr: within the first cycle k < Wr holds, but only t >= C starts a restart warmup
    // t = 20: k = 20 < 50 but t < C -> 0.1 + 0.45*(1 + cos(pi*(20-10)/2990))
    CHECK(mult(o, 20) == exact(0.1 + 0.45 * (1 + std::cos(kPi * 10.0 / 2990.0))));
    // t = 220: k = 20, n = 1 -> (20/50) * [0.1 + 0.45*(1 + cos(pi*(200 + 50 - 10)/2990))]
    CHECK(mult(o, 220) == exact(0.4 * (0.1 + 0.45 * (1 + std::cos(kPi * 240.0 / 2990.0)))));
  }

  TEST_CASE("schedule: constant with warmup (HF get_constant_schedule_with_warmup)") {
    auto o = opts(nn::ScheduleKind::Constant, 4, 0);
    CHECK(mult(o, 0) == 0.0);
    CHECK(mult(o, 2) == 0.5);
    CHECK(mult(o, 3) == 0.75);
    CHECK(mult(o, 4) == 1.0);
    CHECK(mult(o, 1000000) == 1.0);
    o.warmup_steps = 0;  // no warmup: 1 from the first step
    CHECK(mult(o, 0) == 1.0);
  }

  TEST_CASE("schedule: linear with warmup (HF get_linear_schedule_with_warmup)") {
    auto o = opts(nn::ScheduleKind::Linear, 10, 110);
    CHECK(mult(o, 0) == 0.0);
    CHECK(mult(o, 5) == 0.5);  // 5 / 10
    CHECK(mult(o, 9) == exact(0.9));
    CHECK(mult(o, 10) == 1.0);   // (110 - 10) / (110 - 10)
    CHECK(mult(o, 60) == 0.5);   // (110 - 60) / 100
    CHECK(mult(o, 85) == 0.25);  // (110 - 85) / 100
    CHECK(mult(o, 110) == 0.0);  // the end
    CHECK(mult(o, 500) == 0.0);  // max(0, ...) past the end
    o.min_lr_ratio = 0.2;        // m + (1 - m) * f
    CHECK(mult(o, 5) == 0.5);    // warmup is not floored
    CHECK(mult(o, 60) == exact(0.2 + 0.8 * 0.5));
    CHECK(mult(o, 110) == exact(0.2));
    CHECK(mult(o, 500) == exact(0.2));
  }

  TEST_CASE("schedule: cosine with warmup (HF get_cosine_schedule_with_warmup)") {
    auto o = opts(nn::ScheduleKind::Cosine, 10, 110);
    CHECK(mult(o, 5) == 0.5);
    CHECK(mult(o, 10) == 1.0);                                      // progress 0: 0.5 * (1 + cos 0)
    CHECK(mult(o, 60) == exact(0.5));                               // HF: progress 0.5 gives 0.5
    CHECK(mult(o, 35) == exact(0.5 * (1 + std::cos(kPi * 0.25))));  // progress 0.25: 0.8535...
    CHECK(mult(o, 35) == doctest::Approx(0.853553390593274).epsilon(1e-12));
    CHECK(mult(o, 110) == doctest::Approx(0.0).epsilon(1e-12));  // progress 1: 0.5 * (1 + cos pi)
    CHECK(mult(o, 110) >= 0.0);
    CHECK(mult(o, 200) == mult(o, 110));  // progress clamped to 1 past T
    o.min_lr_ratio = 0.1;
    CHECK(mult(o, 60) == exact(0.1 + 0.9 * 0.5));
    CHECK(mult(o, 110) == exact(0.1));
    CHECK(mult(o, 200) == exact(0.1));
  }

  TEST_CASE("schedule: invalid options throw one documented line") {
    using nn::ScheduleKind;
    CHECK_THROWS_WITH_AS(nn::validate(opts(ScheduleKind::Constant, -1, 0)),
                         "[schedule] warmup_steps must be >= 0, got -1", std::invalid_argument);
    CHECK_THROWS_WITH_AS(nn::validate(opts(ScheduleKind::Cosine, 0, 10, 1.5)),
                         "[schedule] min_lr_ratio must be in [0, 1], got 1.5", std::invalid_argument);
    CHECK_THROWS_AS(nn::validate(opts(ScheduleKind::Cosine, 0, 10, std::nan(""))), std::invalid_argument);
    CHECK_THROWS_WITH_AS(nn::validate(opts(ScheduleKind::Linear, 10, 10)),
                         "[schedule] linear needs total_steps (10) > warmup_steps (10)", std::invalid_argument);
    CHECK_THROWS_WITH_AS(nn::lr_multiplier(opts(ScheduleKind::Cosine, 5, 0), 3),
                         "[schedule] cosine needs total_steps (0) > warmup_steps (5)", std::invalid_argument);
    CHECK_NOTHROW(nn::validate(opts(ScheduleKind::Constant, 10, 0)));  // constant needs no total
    nn::ScheduleOptions o = mrpc();
    o.cycle_length = 0;
    CHECK_THROWS_WITH_AS(nn::validate(o), "[schedule] cosine_with_restarts needs cycle_length > 0, got 0",
                         std::invalid_argument);
    o = mrpc();
    o.restart_warmup_steps = 300;
    CHECK_THROWS_WITH_AS(nn::validate(o), "[schedule] restart_warmup_steps must be in [0, cycle_length = 200], got 300",
                         std::invalid_argument);
    o = mrpc();
    o.warmup_steps = 250;
    CHECK_THROWS_WITH_AS(nn::validate(o),
                         "[schedule] cosine_with_restarts needs warmup_steps (250) <= cycle_length (200)",
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(nn::lr_multiplier(mrpc(), -1), "[schedule] the step must be >= 0, got -1",
                         std::invalid_argument);
  }

  TEST_CASE("schedule: kind names parse and print") {
    for (auto k : {nn::ScheduleKind::Constant, nn::ScheduleKind::Linear, nn::ScheduleKind::Cosine,
                   nn::ScheduleKind::CosineWithRestarts})
      CHECK(nn::parse_schedule_kind(nn::schedule_kind_name(k)) == k);
    CHECK(nn::schedule_kind_name(nn::ScheduleKind::CosineWithRestarts) == "cosine_with_restarts");
    CHECK(nn::parse_schedule_kind("linear") == nn::ScheduleKind::Linear);
    CHECK_THROWS_WITH_AS(
        nn::parse_schedule_kind("cosine_restarts"),
        "[schedule] unknown schedule 'cosine_restarts'; valid: constant, linear, cosine, cosine_with_restarts",
        std::invalid_argument);
  }
}

}  // namespace rf::test
