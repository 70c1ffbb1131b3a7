#pragma once
// The one list of elementwise ops. The engine's UnaryOp/BinaryOp enums, the Vulkan shader names
// (vk_shaders.cpp) and the shader variants backends/vulkan/meson.build builds (it reads this file:
// keep one X(Enum, SHADER_NAME) per line) all come from here, so they cannot drift apart; a name
// the GLSL does not know stops the build at its `#error`. Parameters a/b are scalars where the op
// has them.
#define RF_UNARY_OPS(X)                                      \
  X(Neg, NEG)                                                \
  X(Abs, ABS)                                                \
  X(Exp, EXP)                                                \
  X(Log, LOG)                                                \
  X(Sqrt, SQRT)                                              \
  X(Rsqrt, RSQRT)                                            \
  X(Tanh, TANH)                                              \
  X(Sigmoid, SIGMOID)                                        \
  X(Relu, RELU)                                              \
  X(Silu, SILU)                                              \
  X(GeluTanh, GELU_TANH)                                     \
  X(GeluErf, GELU_ERF)                                       \
  X(Square, SQUARE)                                          \
  X(Reciprocal, RECIPROCAL)                                  \
  X(Sign, SIGN)                                              \
  X(Step, STEP)          /* x > 0 ? 1 : 0 (relu grad) */     \
  X(SiluGrad, SILU_GRAD) /* f'(x): backward is dy * f'(x) */ \
  X(GeluTanhGrad, GELU_TANH_GRAD)                            \
  X(GeluErfGrad, GELU_ERF_GRAD)                              \
  X(AddS, ADD_S)   /* x + a */                               \
  X(MulS, MUL_S)   /* x * a */                               \
  X(PowS, POW_S)   /* x ^ a */                               \
  X(RSubS, RSUB_S) /* a - x */                               \
  X(RDivS, RDIV_S) /* a / x */                               \
  X(MaxS, MAX_S)   /* max(x, a) */                           \
  X(MinS, MIN_S)   /* min(x, a) */                           \
  X(Clamp, CLAMP)  /* clamp(x, a, b) */

// Comparisons (Eq..Ge, last) write Bool outputs; the rest write the input dtype.
#define RF_BINARY_OPS(X) \
  X(Add, ADD)            \
  X(Sub, SUB)            \
  X(Mul, MUL)            \
  X(Div, DIV)            \
  X(Pow, POW)            \
  X(Max, MAX)            \
  X(Min, MIN)            \
  X(Eq, EQ)              \
  X(Ne, NE)              \
  X(Lt, LT)              \
  X(Le, LE)              \
  X(Gt, GT)              \
  X(Ge, GE)
