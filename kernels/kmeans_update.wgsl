// Weighted Lloyd update: each codeword becomes the weighted mean of its members, per
// dimension (the minimizer of sum_i sum_d w[i,d] (x[i,d] - c[d])^2 over c).
//   c[k,d] = sum_{i in k} w[i,d] x[i,d] / sum_{i in k} w[i,d]   (kept when the sum of weights is 0)
// One invocation per codeword. Members come as a CSR list (offsets, members) that the host
// builds from the assignment. A dispatch visits members [pass_start, pass_start + pass_count)
// of every cluster and accumulates into dst; the host keeps pass_count * (VEC + 2) below
// 65535 (llvmpipe's loop cap per invocation) and issues more passes for larger clusters.
// The pass with last = 1 writes the new codewords.

override VEC: u32 = 4u;  // vector length v
override WG: u32 = 64u;  // invocations per workgroup

struct Params {
  k: u32,          // codewords
  pass_start: u32, // first member (within each cluster) visited by this dispatch
  pass_count: u32, // members visited per cluster by this dispatch
  flags: u32,      // bit 0: first pass (zero the sums), bit 1: last pass (write codewords)
  row_span: u32,   // invocations per row of the 2-D grid (num_workgroups.x * WG)
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;           // x: vectors [n, VEC]
@group(0) @binding(1) var<storage, read> src1: array<f32>;           // w: metric weights [n, VEC]
@group(0) @binding(2) var<storage, read> src2: array<u32>;           // offsets [k + 1]: cluster k owns members[offsets[k]..offsets[k+1])
@group(0) @binding(3) var<storage, read> src3: array<u32>;           // members [n]: vector ids grouped by cluster
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;      // sums [k, 2, VEC]: sum w*x, then sum w
@group(0) @binding(5) var<storage, read_write> codebook: array<f32>; // c [k, VEC], updated on the last pass
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k = gid.x + gid.y * params.row_span;
  if (k >= params.k) {
    return;
  }
  let sums = k * 2u * VEC;
  if ((params.flags & 1u) != 0u) {
    for (var d = 0u; d < 2u * VEC; d++) {
      dst[sums + d] = 0.0;
    }
  }
  let begin = src2[k] + params.pass_start;
  let end = min(src2[k + 1u], begin + params.pass_count);
  for (var m = begin; m < end; m++) {
    let base = src3[m] * VEC;
    for (var d = 0u; d < VEC; d++) {
      let w = src1[base + d];
      dst[sums + d] += w * src0[base + d];
      dst[sums + VEC + d] += w;
    }
  }
  if ((params.flags & 2u) != 0u) {
    for (var d = 0u; d < VEC; d++) {
      let wsum = dst[sums + VEC + d];
      if (wsum > 0.0) {
        codebook[k * VEC + d] = dst[sums + d] / wsum;
      }
    }
  }
}
