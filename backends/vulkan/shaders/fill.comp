#version 450
// o[i] = value for i < n. Grid-stride loop: each invocation loops at most n / (groups * 256)
// times, far below lavapipe's 65,535-iteration cap for the sizes it is given.
layout(local_size_x = 256) in;
layout(std430, binding = 0) writeonly buffer Out { float o[]; };
layout(push_constant) uniform Push { uint n; float value; } p;

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) o[i] = p.value;
}
