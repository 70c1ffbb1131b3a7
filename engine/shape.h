#pragma once
// Shapes, element strides and broadcasting rules (NumPy semantics).
#include <cstdint>
#include <string>
#include <vector>

namespace rf {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;  // in elements, may be 0 (broadcast) but never negative

int64_t numel(const Shape& s);
Strides contiguous_strides(const Shape& s);
std::string shape_str(const Shape& s);
// Normalises a possibly negative axis; throws "[op] axis a out of range for rank r".
int64_t norm_axis(int64_t axis, int64_t rank, const char* op);
// Broadcast result of two shapes; throws "[op] cannot broadcast (..) with (..)".
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace rf
