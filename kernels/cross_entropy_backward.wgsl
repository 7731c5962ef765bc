// Mean next-token cross-entropy backward, in place on a chunk of logit rows. Row t of
// the sequence (global index row0 + r) predicts token src0[t + 1]:
//   losses[t] = logsumexp(z_t) - z_t[target]
//   dst[r, j] = (softmax(z_t)_j - [j == target]) * inv_count
// where inv_count = 1 / (T - 1) makes the gradient that of the mean over the T - 1
// predicted positions. The last row (t = T - 1) predicts nothing: gradient and loss 0.
//
// With label_mode 1 the gradient's target is not the next token but a label drawn from
// the model's own distribution softmax(z_t), by the Gumbel-max trick with noise from an
// integer hash of (label_seed, t, j): E[gradient outer product] is then the true Fisher
// rather than the empirical one. The loss still uses the next token.
//
// One workgroup per row; each invocation loops over ceil(vocab / WG) columns three times,
// four with label_mode 1 (the host checks this stays below the 65535-iteration cap).

override WG: u32 = 64;

struct Params {
  rows: u32,          // rows in this chunk
  vocab: u32,         // row length
  row0: u32,          // sequence index of the chunk's first row
  seq_len: u32,       // T, tokens in the sequence
  dst_offset: u32,    // element offset of dst[0, 0]
  label_mode: u32,    // 0: the next token; 1: a label sampled from softmax(z_t)
  label_seed: u32,    // seed of the sampled labels of this sequence
  inv_count: f32,     // 1 / (T - 1)
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;          // tokens: [T]
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;     // logits in, dLoss/dlogits out: [rows, vocab]
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;  // per-position loss (nats): [T]
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;
var<workgroup> partial_index: array<u32, WG>;

// PCG hash (Jarzynski and Olano, "Hash Functions for GPU Rendering", JCGT 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Gumbel(0, 1) noise for column j of row t: -log(-log(u)) with u in (0, 1) from 24 hash bits.
fn gumbel(t: u32, j: u32) -> f32 {
  let h = pcg(params.label_seed + pcg(t + pcg(j)));
  let u = (f32(h >> 8u) + 0.5) * (1.0 / 16777216.0);
  return -log(-log(u));
}

// Index of the largest value over the workgroup (the smallest index among equals).
fn combine_argmax(value: f32, index: u32, lid: u32) -> u32 {
  partial[lid] = value;
  partial_index[lid] = index;
  workgroupBarrier();
  if (lid == 0u) {
    var best = partial[0];
    var best_index = partial_index[0];
    for (var j = 1u; j < WG; j++) {
      let better = partial[j] > best || (partial[j] == best && partial_index[j] < best_index);
      if (better) {
        best = partial[j];
        best_index = partial_index[j];
      }
    }
    partial_index[0] = best_index;
  }
  workgroupBarrier();
  let result = partial_index[0];
  workgroupBarrier();
  return result;
}

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
  var label = target_id;
  if (params.label_mode == 1u) {
    var best = -3.0e38;
    var best_index = 0u;
    for (var j = lid.x; j < params.vocab; j += WG) {
      let v = dst[base + j] + gumbel(t, j);
      if (v > best) {
        best = v;
        best_index = j;
      }
    }
    label = combine_argmax(best, best_index, lid.x);
  }
  workgroupBarrier();
  if (lid.x == 0u) {
    losses[t] = lse - target_logit;
  }
  for (var j = lid.x; j < params.vocab; j += WG) {
    let onehot = select(0.0, 1.0, j == label);
    dst[base + j] = (exp(dst[base + j] - lse) - onehot) * params.inv_count;
  }
}
