// Shared by the row kernels: workgroup-wide sum/max over 256 invocations. The SUBGROUP variant
// reduces inside subgroups first (subgroup arithmetic), the fallback is a shared-memory tree.
#ifndef RF_COMMON_GLSL
#define RF_COMMON_GLSL
#extension GL_EXT_control_flow_attributes : enable
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_basic : require
#endif
#define WG 256
shared float rf_red[WG];

#ifdef SUBGROUP
float wg_sum(float v) {
  v = subgroupAdd(v);
  barrier();  // earlier readers of rf_red are done
  if (subgroupElect()) rf_red[gl_SubgroupID] = v;
  barrier();
  float s = 0.0;
  for (uint i = 0; i < gl_NumSubgroups; ++i) s += rf_red[i];
  return s;
}
float wg_max(float v) {
  v = subgroupMax(v);
  barrier();
  if (subgroupElect()) rf_red[gl_SubgroupID] = v;
  barrier();
  float s = rf_red[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) s = max(s, rf_red[i]);
  return s;
}
#else
float wg_sum(float v) {
  uint t = gl_LocalInvocationID.x;
  barrier();
  rf_red[t] = v;
  barrier();
  [[unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
    if (t < s) rf_red[t] += rf_red[t + s];
    barrier();
  }
  return rf_red[0];
}
float wg_max(float v) {
  uint t = gl_LocalInvocationID.x;
  barrier();
  rf_red[t] = v;
  barrier();
  [[unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
    if (t < s) rf_red[t] = max(rf_red[t], rf_red[t + s]);
    barrier();
  }
  return rf_red[0];
}
#endif

// Workgroups are laid out in x then y so more than 65,535 rows fit in one dispatch.
uint wg_row() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }
#endif
