#version 450
// Configure-time probe: does glslc compile 16-bit float arithmetic?
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
layout(local_size_x = 1) in;
layout(std430, binding = 0) buffer B { float b[]; };
void main() { float16_t h = float16_t(b[0]); b[0] = float(h * h); }
