// Causal softmax of one head's attention scores, in place, for the training forward
// pass and the recomputation in the backward pass:
//   p[t, u] = exp(scale * s[t, u] - m_t) / sum_{u' <= t} exp(scale * s[t, u'] - m_t) for u <= t
//   p[t, u] = 0 for u > t (future positions are masked)
// One workgroup per row t; each invocation loops over ceil(T / WG) columns four times.

override WG: u32 = 64;

struct Params {
  rows: u32,     // T, rows and columns of the score matrix
  offset: u32,   // element offset of dst[0, 0]
  scale: f32,    // 1 / sqrt(head_dim)
}

@group(0) @binding(0) var<storage, read_write> dst: array<f32>; // scores in, probabilities out: [T, T]
@group(0) @binding(1) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

fn combine(value: f32, lid: u32, is_max: bool) -> f32 {
  partial[lid] = value;
  workgroupBarrier();
  if (lid == 0u) {
    var total = partial[0];
    for (var j = 1u; j < WG; j++) {
      total = select(total + partial[j], max(total, partial[j]), is_max);
    }
    partial[0] = total;
  }
  workgroupBarrier();
  let result = partial[0];
  workgroupBarrier();
  return result;
}

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
  let base = params.offset + t * params.rows;
  var m = -3.0e38;
  for (var u = lid.x; u <= t; u += WG) {
    m = max(m, params.scale * dst[base + u]);
  }
  m = combine(m, lid.x, true);
  var s = 0.0;
  for (var u = lid.x; u <= t; u += WG) {
    s += exp(params.scale * dst[base + u] - m);
  }
  s = combine(s, lid.x, false);
  for (var u = lid.x; u < params.rows; u += WG) {
    dst[base + u] = select(0.0, exp(params.scale * dst[base + u] - m) / s, u <= t);
  }
}
