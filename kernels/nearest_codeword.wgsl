// Nearest codeword under a diagonal weighted metric, optionally plus RSAVQ's EDSG term.
//
// For vector i and codeword k:
//   score = sum_d w[i,d] * (x[i,d] - c[k,d])^2                     (EDSG = 0)
//         + lambda * (s[i] + sum_d (c[k,d] - x[i,d]) * n[i,d])^2   (EDSG = 1, projection)
//         + lambda * sum_d (c[k,d] - x[i,d]) * n[i,d]               (EDSG = 2, first order)
// One invocation per vector. A dispatch scans codewords [k_start, k_start + k_count) and
// merges with the best of earlier dispatches stored in dst (strictly lower score wins, so
// the lowest index wins ties, as in a single scan). The host keeps
// k_count * (VEC + 2) below 65535, because llvmpipe silently stops every loop of an
// invocation after 65535 iterations in total; codebooks of any size take several dispatches.

override VEC: u32 = 4u;   // vector length v
override WG: u32 = 64u;   // invocations per workgroup
override EDSG: u32 = 0u;  // 0 none, 1 projection (quadratic), 2 first order (linear)

struct Params {
  n: u32,        // vectors
  k_start: u32,  // first codeword scanned by this dispatch
  k_count: u32,  // codewords scanned by this dispatch
  first: u32,    // 1: ignore dst's previous contents
  lambda: f32,   // EDSG weight
  row_span: u32, // invocations per workgroup row of the 2-D grid (num_workgroups.x * WG)
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;        // x: vectors [n, VEC]
@group(0) @binding(1) var<storage, read> src1: array<f32>;        // w: metric weights [n, VEC]
@group(0) @binding(2) var<storage, read> src2: array<f32>;        // c: codebook [K, VEC]
@group(0) @binding(3) var<storage, read> src3: array<f32>;        // guide [n, VEC + 1]: n[i, 0..VEC), s[i] (read when EDSG > 0)
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;   // [n, 2]: best index, best score as f32 bits
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * params.row_span;
  if (i >= params.n) {
    return;
  }
  var best_index = 0u;
  var best_score = 0.0;
  var have = false;
  if (params.first == 0u) {
    best_index = dst[2u * i];
    best_score = bitcast<f32>(dst[2u * i + 1u]);
    have = true;
  }
  let base = i * VEC;
  let guide_base = i * (VEC + 1u);
  for (var k = params.k_start; k < params.k_start + params.k_count; k++) {
    var dist = 0.0;
    var proj = 0.0;
    for (var d = 0u; d < VEC; d++) {
      let e = src2[k * VEC + d] - src0[base + d];
      dist += src1[base + d] * e * e;
      if (EDSG > 0u) {
        proj += e * src3[guide_base + d];
      }
    }
    var score = dist;
    if (EDSG == 1u) {
      let t = src3[guide_base + VEC] + proj;
      score = dist + params.lambda * (t * t);
    } else if (EDSG == 2u) {
      score = dist + params.lambda * proj;
    }
    if (!have || score < best_score) {
      best_score = score;
      best_index = k;
      have = true;
    }
  }
  dst[2u * i] = best_index;
  dst[2u * i + 1u] = bitcast<u32>(best_score);
}
