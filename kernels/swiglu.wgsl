// SwiGLU activation, in place on the gate: dst[i] = silu(dst[i]) * src0[i], with
// silu(g) = g / (1 + exp(-g)). One invocation per element.

override WG: u32 = 64;

struct Params {
  n: u32,          // elements
  src_offset: u32, // element offset of src0[0]
  dst_offset: u32, // element offset of dst[0]
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // up projection: [n]
@group(0) @binding(1) var<storage, read_write> dst: array<f32>; // gate projection in, activation out: [n]
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) {
    return;
  }
  let g = dst[params.dst_offset + i];
  dst[params.dst_offset + i] = g / (1.0 + exp(-g)) * src0[params.src_offset + i];
}
