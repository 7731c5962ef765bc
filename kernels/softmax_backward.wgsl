// Backward of the scaled causal softmax of one attention head, in place on dP:
//   dst[t, u] = scale * p[t, u] * (dp[t, u] - sum_{u'} p[t, u'] dp[t, u'])
// which is dLoss/dS for raw scores S = Q K^T (the scale of attention_probs_backward.wgsl
// folded in). Masked entries have p = 0 and get 0. One workgroup per row; each
// invocation loops over ceil(T / WG) columns twice.

override WG: u32 = 64;

struct Params {
  rows: u32,     // T
  p_offset: u32, // element offset of src0[0, 0]
  offset: u32,   // element offset of dst[0, 0]
  scale: f32,    // 1 / sqrt(head_dim)
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // p: [T, T]
@group(0) @binding(1) var<storage, read_write> dst: array<f32>; // dP in, dS out: [T, T]
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let t = wid.x + wid.y * groups.x;
  if (t >= params.rows) {
    return;
  }
  let pb = params.p_offset + t * params.rows;
  let db = params.offset + t * params.rows;
  var sum = 0.0;
  for (var u = lid.x; u <= t; u += WG) {
    sum += src0[pb + u] * dst[db + u];
  }
  partial[lid.x] = sum;
  workgroupBarrier();
  if (lid.x == 0u) {
    var total = 0.0;
    for (var j = 0u; j < WG; j++) {
      total += partial[j];
    }
    partial[0] = total;
  }
  workgroupBarrier();
  let weighted = partial[0];
  for (var u = lid.x; u < params.rows; u += WG) {
    dst[db + u] = params.scale * src0[pb + u] * (dst[db + u] - weighted);
  }
}
