// Causal attention, second pass: combines the per-block partial softmax states of
// attention.wgsl into the attention output. For query row r, head h, element d:
//   M = max_b m_b,  out[r, h * head_dim + d] = sum_b exp(m_b - M) o_b[d] / sum_b exp(m_b - M) l_b
// Empty blocks (m = -3e38, l = 0) get weight 0. One invocation per output element runs
// 2 * n_blocks loop iterations; the host keeps n_blocks far below the 65535 cap.

override WG: u32 = 64;

struct Params {
  rows: u32,       // query rows
  n_heads: u32,    // query heads
  head_dim: u32,   // width of one head
  n_blocks: u32,   // key blocks per row and head
  out_stride: u32, // elements between output rows
  out_offset: u32, // element offset of output row 0
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // partials: [rows, n_heads, n_blocks, 2 + head_dim] (m, l, o)
@group(0) @binding(1) var<storage, read_write> dst: array<f32>; // out: [rows, out_stride], head h at h * head_dim
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  let hd = params.head_dim;
  if (i >= params.rows * params.n_heads * hd) {
    return;
  }
  let d = i % hd;
  let head = (i / hd) % params.n_heads;
  let row = i / (hd * params.n_heads);
  let width = hd + 2u;
  let base = (row * params.n_heads + head) * params.n_blocks * width;

  var m = -3.4e38;
  for (var b = 0u; b < params.n_blocks; b++) {
    m = max(m, src0[base + b * width]);
  }
  var l = 0.0;
  var o = 0.0;
  for (var b = 0u; b < params.n_blocks; b++) {
    let at = base + b * width;
    let w = exp(src0[at] - m);
    l += src0[at + 1u] * w;
    o += src0[at + 2u + d] * w;
  }
  dst[params.out_offset + row * params.out_stride + head * hd + d] = o / l;
}
