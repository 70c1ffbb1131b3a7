// One table drives the gradient check of every differentiable op: f64 central differences
// against the tape, with broadcast shapes, non-contiguous views built inside fn (so the gradient
// also flows back through the view), keepdim and negative axes.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <set>
#include <string>
#include <vector>

#include "tests/op_table.h"

namespace rf::test {

TEST_SUITE("gradcheck") {
  TEST_CASE("every differentiable op matches f64 central differences") {
    std::vector<GradCase> table = build_table();
    std::set<std::string> covered;
    double worst = 0;
    std::string worst_name;
    for (const GradCase& c : table) {
      std::string name = c.op + " [" + c.variant + "]";
      covered.insert(c.op);
      try {
        GradcheckResult r = gradcheck(c.fn, c.inputs());
        CHECK_MESSAGE(r.max_rel_error <= 1e-6, name << ": max rel error " << r.max_rel_error << " at " << r.worst);
        if (!(r.max_rel_error <= worst)) {
          worst = r.max_rel_error;
          worst_name = name;
        }
      } catch (const std::exception& e) {
        FAIL_CHECK(name << " threw: " << std::string(e.what()));
      }
    }
    for (const std::string& op : kRequiredOps) CHECK_MESSAGE(covered.count(op) == 1, "gradcheck does not cover " << op);
    fmt::print("gradcheck covered {} ops in {} cases (worst {:.2e}: {}): {}\n", covered.size(), table.size(), worst,
               worst_name, fmt::join(covered, ", "));
  }
}

}  // namespace rf::test
