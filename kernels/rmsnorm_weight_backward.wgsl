// RMSNorm weight gradient over a slice of rows: dst[i] += sum_t dy[t, i] x[t, i] r_t,
// with r_t from rmsnorm_backward.wgsl. One invocation per column; the host splits the
// rows into dispatches of at most ROWS_PER_DISPATCH so no invocation passes the
// 65535-iteration cap.

override WG: u32 = 64;

struct Params {
  rows: u32,   // rows in this dispatch
  dim: u32,    // row length
  row0: u32,   // first row of this dispatch
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // x: [T, dim]
@group(0) @binding(1) var<storage, read> src1: array<f32>;      // dy: [T, dim]
@group(0) @binding(2) var<storage, read> src2: array<f32>;      // r: [T]
@group(0) @binding(3) var<storage, read_write> dst: array<f32>; // dweight: [dim], accumulated
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.dim) {
    return;
  }
  var sum = 0.0;
  for (var t = params.row0; t < params.row0 + params.rows; t++) {
    let at = t * params.dim + i;
    sum += src1[at] * src0[at] * src2[t];
  }
  dst[i] += sum;
}
