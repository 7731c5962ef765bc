// Vector-quantized linear layer for prefill, one stage of one channel group per dispatch:
//   y[t, row(p)] (+)= scale[row(p)] * sum_q dot(codebook[index(p, q)], x[t, q V .. q V + V))
// for tokens t in [0, tokens), the group's stored positions p in [pos0, pos0 + count) and
// vectors q in [q0, q1), with row(p) = channel_order[p] under HAS_ORDER and p otherwise.
// This is y[T, rows] = x[T, cols] @ W^T restricted to the group's rows; the host records
// one dispatch per (group, stage, column slice) and all but the first add to y.
//
// Index packing, codebook storage and padding follow kernels/matvec_vq.wgsl: `bits`-wide
// indices packed least significant bit first into little-endian u32 words (an index may
// straddle two words), an F16 [K, V] codebook read as u32 pairs with unpack2x16float,
// copied into workgroup memory under CB_SHARED, and padded columns meeting x = 0.
//
// One invocation computes one row for 8 consecutive tokens, so each index and codeword
// is decoded once per 8 tokens. Tokens past the end are clamped on load and skipped on
// store. It runs CB_WORDS / WG copy iterations plus q1 - q0 vector iterations; the host
// keeps that sum below the 65535-iteration cap.

override V: u32 = 4;               // vector length, 1 to 8
override WG: u32 = 64;             // invocations per workgroup along the rows
override CB_SHARED: bool = true;   // codebook copied into workgroup memory
override CB_WORDS: u32 = 1;        // u32 words of the workgroup copy: ceil(K * V / 2), or 1
override HAS_ORDER: bool = false;  // rows are permuted by channel_order
override ACCUMULATE: bool = false; // add to y instead of overwriting it

struct Params {
  count: u32,    // stored positions of this group (invocations along x)
  pos0: u32,     // first stored position of this group
  per_row: u32,  // vectors per row, ceil(cols / V)
  q0: u32,       // first vector of this dispatch's column slice
  q1: u32,       // end of the slice (exclusive), at most per_row
  cols: u32,     // columns of W and row stride of x
  bits: u32,     // index width in bits
  tokens: u32,   // rows of x and y
  ldy: u32,      // row stride of y in elements
  x_offset: u32, // element offset of x[0, 0]
  y_offset: u32, // element offset of y[0, 0]
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;      // indices: [count * per_row] packed, bits each
@group(0) @binding(1) var<storage, read> src1: array<u32>;      // codebook: [K, V] f16, two per word
@group(0) @binding(2) var<storage, read> src2: array<f32>;      // x: [tokens, cols]
@group(0) @binding(3) var<storage, read> src3: array<u32>;      // scales: [rows] f16 in row order, two per word
@group(0) @binding(4) var<storage, read> src4: array<u32>;      // channel_order: [rows] stored position -> row (HAS_ORDER)
@group(0) @binding(5) var<storage, read_write> dst: array<f32>; // y: [tokens, rows], row stride ldy
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> codebook: array<u32, CB_WORDS>;

// Element offsets of x[t, 0] for the invocation's 8 tokens (clamped to the last token).
struct TokenRows {
  lo: vec4<u32>,
  hi: vec4<u32>,
}

fn codebook_word(i: u32) -> u32 {
  if (CB_SHARED) {
    return codebook[i];
  }
  return src1[i];
}

fn codebook_half(e: u32) -> f32 {
  return unpack2x16float(codebook_word(e >> 1u))[e & 1u];
}

// Elements 2j and 2j + 1 of codeword `index`; the second is 0 when 2j + 1 = V.
fn codeword_pair(index: u32, j: u32) -> vec2<f32> {
  if (V % 2u == 0u) {
    return unpack2x16float(codebook_word(index * (V / 2u) + j));
  }
  let e = index * V + 2u * j;
  return vec2<f32>(codebook_half(e), select(0.0, codebook_half(e + 1u), 2u * j + 1u < V));
}

// Column c of x for four tokens; 0 past cols when `tail`.
fn x_column(r: vec4<u32>, c: u32, tail: bool) -> vec4<f32> {
  let x = vec4<f32>(src2[r.x + c], src2[r.y + c], src2[r.z + c], src2[r.w + c]);
  return select(x, vec4<f32>(0.0), tail && c >= params.cols);
}

// Adds elements 2j and 2j + 1 of codeword `index` times x columns c + 2j, c + 2j + 1 to the 8 token sums.
fn add_pair(acc: ptr<function, array<vec4<f32>, 2>>, r: TokenRows, index: u32, c: u32, j: u32, tail: bool) {
  let w = codeword_pair(index, j);
  let a = c + 2u * j;
  (*acc)[0] += w.x * x_column(r.lo, a, tail);
  (*acc)[1] += w.x * x_column(r.hi, a, tail);
  if (2u * j + 1u < V) {
    (*acc)[0] += w.y * x_column(r.lo, a + 1u, tail);
    (*acc)[1] += w.y * x_column(r.hi, a + 1u, tail);
  }
}

// Adds codeword `index` times columns c .. c + V - 1 of x (unrolled: loops count toward the cap).
fn add_vector(acc: ptr<function, array<vec4<f32>, 2>>, r: TokenRows, index: u32, c: u32, tail: bool) {
  add_pair(acc, r, index, c, 0u, tail);
  if (V > 2u) {
    add_pair(acc, r, index, c, 1u, tail);
  }
  if (V > 4u) {
    add_pair(acc, r, index, c, 2u, tail);
  }
  if (V > 6u) {
    add_pair(acc, r, index, c, 3u, tail);
  }
}

// The index that starts at stream bit `bit`, reading the next word when it straddles two.
fn index_at(bit: u32, mask: u32) -> u32 {
  let w = bit >> 5u;
  let s = bit & 31u;
  var value = src0[w] >> s;
  if (s + params.bits > 32u) {
    value |= src0[w + 1u] << (32u - s);
  }
  return value & mask;
}

fn scale_of(row: u32) -> f32 {
  return unpack2x16float(src3[row >> 1u])[row & 1u];
}

fn store(t: u32, row: u32, value: f32) {
  if (t >= params.tokens) {
    return;
  }
  let at = params.y_offset + t * params.ldy + row;
  if (ACCUMULATE) {
    dst[at] += value;
  } else {
    dst[at] = value;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // every invocation helps copy the codebook before any may return (barrier in uniform flow)
  if (CB_SHARED) {
    for (var i = lid; i < CB_WORDS; i += WG) {
      codebook[i] = src1[i];
    }
  }
  workgroupBarrier();
  let i = gid.x;
  let t0 = gid.y * 8u;
  if (i >= params.count || t0 >= params.tokens) {
    return;
  }

  let last = params.tokens - 1u;
  let t = vec4<u32>(0u, 1u, 2u, 3u) + t0;
  let rows = TokenRows(
    params.x_offset + min(t, vec4<u32>(last)) * params.cols,
    params.x_offset + min(t + 4u, vec4<u32>(last)) * params.cols,
  );
  let mask = select((1u << params.bits) - 1u, 0xffffffffu, params.bits >= 32u);
  var bit = (i * params.per_row + params.q0) * params.bits;
  // vectors that lie wholly inside cols; a padded last vector is handled after the loop
  let full_end = min(params.q1, params.cols / V);
  var acc = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
  var q = params.q0;
  for (; q < full_end; q++) {
    add_vector(&acc, rows, index_at(bit, mask), q * V, false);
    bit += params.bits;
  }
  if (q < params.q1) {
    add_vector(&acc, rows, index_at(bit, mask), q * V, true);
  }

  let p = params.pos0 + i;
  var row = p;
  if (HAS_ORDER) {
    row = src4[p];
  }
  let s = scale_of(row);
  for (var k = 0u; k < 4u; k++) {
    store(t0 + k, row, s * acc[0][k]);
    store(t0 + 4u + k, row, s * acc[1][k]);
  }
}
