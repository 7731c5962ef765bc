// In-place addition with broadcasting: dst[i] += src0[i % period] for i < n. With
// period = n it adds two tensors (a residual); with period = row length it adds a
// bias to every row. One invocation per element.

override WG: u32 = 64;

struct Params {
  n: u32,          // elements of dst to update
  period: u32,     // elements of src0 repeated along dst
  src_offset: u32, // element offset of src0[0]
  dst_offset: u32, // element offset of dst[0]
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // y: [period]
@group(0) @binding(1) var<storage, read_write> dst: array<f32>; // x: [n / period, period]
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.n) {
    return;
  }
  dst[params.dst_offset + i] += src0[params.src_offset + i % params.period];
}
