// Causal grouped-query attention, first pass: each invocation attends one query row
// and head to one block of keys and writes the block's partial softmax state (split-K
// attention, as in "flash decoding"); attention_merge.wgsl combines the blocks.
//
// Query row r sits at position pos0 + r and sees keys 0 ..= pos0 + r. Query head h
// reads key/value head h / group. For block b, keys [b * block_len, (b + 1) * block_len)
// clipped to the causal limit give scores s_j = (q . k_j) * scale, and the block writes
//   m = max_j s_j,  l = sum_j exp(s_j - m),  o[d] = sum_j exp(s_j - m) * v_j[d]
// (an empty block writes m = -3e38, l = 0, o = 0).
//
// Loop cap: one invocation runs about block_len * (2 * head_dim + 2) + head_dim loop
// iterations; the host picks block_len so that this stays below 65535 and below
// MAX_BLOCK (src/ops/attention.ts). Long contexts thus use more blocks, never longer
// loops.

override WG: u32 = 64;
const MAX_BLOCK: u32 = 128u;
const EMPTY: f32 = -3.0e38;

struct Params {
  rows: u32,      // query rows
  n_heads: u32,   // query heads
  group: u32,     // query heads per key/value head
  head_dim: u32,  // width of one head
  q_stride: u32,  // elements between query rows
  q_offset: u32,  // element offset of query row 0
  kv_stride: u32, // elements between cached positions (n_kv_heads * head_dim)
  k_offset: u32,  // element offset of cached key position 0
  v_offset: u32,  // element offset of cached value position 0
  pos0: u32,      // position of query row 0
  n_blocks: u32,  // key blocks per query row and head
  block_len: u32, // keys per block, at most MAX_BLOCK
  scale: f32,     // score scale, 1 / sqrt(head_dim)
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // q: [rows, q_stride]
@group(0) @binding(1) var<storage, read> src1: array<f32>;      // key cache: [positions, kv_stride]
@group(0) @binding(2) var<storage, read> src2: array<f32>;      // value cache: [positions, kv_stride]
@group(0) @binding(3) var<storage, read_write> dst: array<f32>; // partials: [rows, n_heads, n_blocks, 2 + head_dim] (m, l, o)
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.rows * params.n_heads * params.n_blocks) {
    return;
  }
  let block = i % params.n_blocks;
  let head = (i / params.n_blocks) % params.n_heads;
  let row = i / (params.n_blocks * params.n_heads);
  let hd = params.head_dim;
  let out = i * (hd + 2u);

  let k_begin = block * params.block_len;
  let k_end = min(k_begin + params.block_len, params.pos0 + row + 1u);
  if (k_begin >= k_end) {
    dst[out] = EMPTY;
    dst[out + 1u] = 0.0;
    for (var d = 0u; d < hd; d++) {
      dst[out + 2u + d] = 0.0;
    }
    return;
  }
  let len = k_end - k_begin;
  let q = params.q_offset + row * params.q_stride + head * hd;
  let kv_col = (head / params.group) * hd;

  // scores of this block and their maximum
  var scores: array<f32, MAX_BLOCK>;
  var m = EMPTY;
  for (var j = 0u; j < len; j++) {
    let key = params.k_offset + (k_begin + j) * params.kv_stride + kv_col;
    var dot = 0.0;
    for (var d = 0u; d < hd; d++) {
      dot += src0[q + d] * src1[key + d];
    }
    let s = dot * params.scale;
    scores[j] = s;
    m = max(m, s);
  }

  // unnormalised weights and their sum
  var l = 0.0;
  for (var j = 0u; j < len; j++) {
    let e = exp(scores[j] - m);
    scores[j] = e;
    l += e;
  }

  // weighted sum of values, one output element at a time
  let value0 = params.v_offset + k_begin * params.kv_stride + kv_col;
  for (var d = 0u; d < hd; d++) {
    var acc = 0.0;
    for (var j = 0u; j < len; j++) {
      acc += scores[j] * src2[value0 + j * params.kv_stride + d];
    }
    dst[out + 2u + d] = acc;
  }
  dst[out] = m;
  dst[out + 1u] = l;
}
