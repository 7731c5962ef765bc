// Per-sequence gradient statistics: for the weight gradient g of one sequence,
//   dst0[i] += g[i]        (running sum of g_s, divided into the mean gradient)
//   dst1[i] += g[i] * g[i] (running sum of g_s^2, divided into the diagonal Fisher)
// One invocation per element.

override WG: u32 = 64;

struct Params {
  n: u32,  // elements
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;       // g: [n]
@group(0) @binding(1) var<storage, read_write> dst0: array<f32>; // sum of g: [n]
@group(0) @binding(2) var<storage, read_write> dst1: array<f32>; // sum of g^2: [n]
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) {
    return;
  }
  let g = src0[i];
  dst0[i] += g;
  dst1[i] += g * g;
}
