#version 450
// Configure-time probe: does glslc compile subgroup arithmetic?
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer B { float b[]; };
void main() { b[gl_LocalInvocationID.x] = subgroupAdd(b[gl_LocalInvocationID.x]); }
