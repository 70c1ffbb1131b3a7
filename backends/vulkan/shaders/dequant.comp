#version 450
#extension GL_GOOGLE_include_directive : require
// out (rows, cols) f32 = the dequantized weight, one element per invocation in a grid-stride loop
// (the host caps the grid at 4096 workgroups and refuses 2^32 elements, so a loop runs at most
// 4096 times, under lavapipe's 65,535-iteration cut).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer Codes { uint codes[]; };
layout(std430, binding = 1) readonly buffer Scales { float qscales[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
#include "quant.glsl"

void main() {
  const uint stride = gl_NumWorkGroups.x * 256u;
  for (uint e = gl_GlobalInvocationID.x; e < p.N; e += stride) {
    const uint row = p.type == 0u ? e / p.cols : 0u;  // int8 scales go by row, 4-bit ones by e
    o[p.o_off + e] = qvalue(e, row);
  }
}
