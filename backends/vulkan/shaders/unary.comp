#version 450
// o[i] = OP(x[strided index of i]) for one UnaryOp, chosen at build time by -DOP_<NAME>.
// The host collapses dims (at most 6, innermost last); o is strided too (in-place on views).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(push_constant) uniform Push {
  uint n, ndim, x_off, o_off;
  uint shape[6];
  uint xs[6];
  uint os[6];
  float a, b;
} p;

float sigm(float v) { return 1.0 / (1.0 + exp(-v)); }
float gelu_tanh(float v) { return 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); }
// GLSL has no erf: 1 - erfc with Numerical Recipes' Chebyshev erfc (fractional error < 1.2e-7).
float erf_approx(float v) {
  float t = 1.0 / (1.0 + 0.5 * abs(v));
  float y = 1.0 - t * exp(-v * v - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
            t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
            t * (-0.82215223 + t * 0.17087277)))))))));
  return v >= 0.0 ? y : -y;
}

float op(float v) {
#if defined(OP_NEG)
  return -v;
#elif defined(OP_ABS)
  return abs(v);
#elif defined(OP_EXP)
  return exp(v);
#elif defined(OP_LOG)
  return log(v);
#elif defined(OP_SQRT)
  return sqrt(v);
#elif defined(OP_RSQRT)
  return inversesqrt(v);
#elif defined(OP_TANH)
  return tanh(v);
#elif defined(OP_SIGMOID)
  return sigm(v);
#elif defined(OP_RELU)
  return max(v, 0.0);
#elif defined(OP_SILU)
  return v * sigm(v);
#elif defined(OP_GELU_TANH)
  return gelu_tanh(v);
#elif defined(OP_GELU_ERF)
  return 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
#elif defined(OP_SQUARE)
  return v * v;
#elif defined(OP_RECIPROCAL)
  return 1.0 / v;
#elif defined(OP_SIGN)
  return sign(v);
#elif defined(OP_STEP)
  return v > 0.0 ? 1.0 : 0.0;
#elif defined(OP_SILU_GRAD)
  float s = sigm(v);
  return s * (1.0 + v * (1.0 - s));
#elif defined(OP_GELU_TANH_GRAD)
  float k = 0.7978845608028654, c = 0.044715;
  float t = tanh(k * (v + c * v * v * v));
  return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * c * v * v);
#elif defined(OP_GELU_ERF_GRAD)
  return 0.5 * (1.0 + erf_approx(v * 0.7071067811865476)) + v * 0.3989422804014327 * exp(-0.5 * v * v);
#elif defined(OP_POW_S)
  return pow(v, p.a);
#elif defined(OP_RSUB_S)
  return p.a - v;
#elif defined(OP_RDIV_S)
  return p.a / v;
#elif defined(OP_MAX_S)
  return max(v, p.a);
#elif defined(OP_MIN_S)
  return min(v, p.a);
#elif defined(OP_ADD_S)
  return v + p.a;
#elif defined(OP_MUL_S)
  return v * p.a;
#elif defined(OP_CLAMP)
  return clamp(v, p.a, p.b);
#else
#error "define one OP_<NAME>"
#endif
}

void main() {
  uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    uint rem = i, xi = p.x_off, oi = p.o_off;
    for (int d = int(p.ndim) - 1; d >= 0; --d) {
      uint c = rem % p.shape[d];
      rem /= p.shape[d];
      xi += c * p.xs[d];
      oi += c * p.os[d];
    }
    o[oi] = op(x[xi]);
  }
}
