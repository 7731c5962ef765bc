// SwiGLU backward, in place on the saved projections: with s = sigmoid(g),
//   g <- dh * u * s * (1 + g * (1 - s))   (dLoss/dg)
//   u <- dh * g * s                        (dLoss/du)
// One invocation per element.

override WG: u32 = 64;

struct Params {
  n: u32,  // elements (rows * hidden)
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;       // dh: [n]
@group(0) @binding(1) var<storage, read_write> dst0: array<f32>; // g in, dg out: [n]
@group(0) @binding(2) var<storage, read_write> dst1: array<f32>; // u in, du out: [n]
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) {
    return;
  }
  let g = dst0[i];
  let u = dst1[i];
  let dh = src0[i];
  let s = 1.0 / (1.0 + exp(-g));
  dst0[i] = dh * u * s * (1.0 + g * (1.0 - s));
  dst1[i] = dh * g * s;
}
