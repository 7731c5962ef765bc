// Mean next-token cross-entropy backward, in place on a chunk of logit rows. Row t of
// the sequence (global index row0 + r) predicts token src0[t + 1]:
//   losses[t] = logsumexp(z_t) - z_t[target]
//   dst[r, j] = (softmax(z_t)_j - [j == target]) * inv_count
// where inv_count = 1 / (T - 1) makes the gradient that of the mean over the T - 1
// predicted positions. The last row (t = T - 1) predicts nothing: gradient and loss 0.
//
// One workgroup per row; each invocation loops over ceil(vocab / WG) columns three times
// (the host checks this stays below the 65535-iteration cap).

override WG: u32 = 64;

struct Params {
  rows: u32,          // rows in this chunk
  vocab: u32,         // row length
  row0: u32,          // sequence index of the chunk's first row
  seq_len: u32,       // T, tokens in the sequence
  dst_offset: u32,    // element offset of dst[0, 0]
  inv_count: f32,     // 1 / (T - 1)
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;          // tokens: [T]
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;     // logits in, dLoss/dlogits out: [rows, vocab]
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;  // per-position loss (nats): [T]
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

// Combines the WG partial values with max (is_max) or sum, in a fixed order.
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
  let r = wid.x + wid.y * groups.x;
  if (r >= params.rows) {
    return;
  }
  let t = params.row0 + r;
  let base = params.dst_offset + r * params.vocab;
  if (t + 1u >= params.seq_len) {
    for (var j = lid.x; j < params.vocab; j += WG) {
      dst[base + j] = 0.0;
    }
    if (lid.x == 0u) {
      losses[t] = 0.0;
    }
    return;
  }

  var m = -3.0e38;
  for (var j = lid.x; j < params.vocab; j += WG) {
    m = max(m, dst[base + j]);
  }
  m = combine(m, lid.x, true);
  var s = 0.0;
  for (var j = lid.x; j < params.vocab; j += WG) {
    s += exp(dst[base + j] - m);
  }
  s = combine(s, lid.x, false);
  let lse = log(s) + m;
  let target_id = src0[t + 1u];
  // every invocation reads the target logit before any invocation overwrites the row
  let target_logit = dst[base + target_id];
  workgroupBarrier();
  if (lid.x == 0u) {
    losses[t] = lse - target_logit;
  }
  for (var j = lid.x; j < params.vocab; j += WG) {
    let onehot = select(0.0, 1.0, j == target_id);
    dst[base + j] = (exp(dst[base + j] - lse) - onehot) * params.inv_count;
  }
}
