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
// One invocation computes four rows (consecutive stored positions) for 8 consecutive
// tokens, so each codeword is decoded once per 8 tokens and each x value loaded once per
// four rows. Tokens and positions past the end are clamped on load and skipped on store.
// It runs CB_WORDS / WG copy iterations plus q1 - q0 vector iterations; the host keeps
// that sum below the 65535-iteration cap.

override V: u32 = 4;               // vector length, 1 to 8
override WG: u32 = 64;             // invocations per workgroup along the rows, four rows each
override CB_SHARED: bool = true;   // codebook copied into workgroup memory
override CB_WORDS: u32 = 1;        // u32 words of the workgroup copy: ceil(K * V / 2), or 1
override HAS_ORDER: bool = false;  // rows are permuted by channel_order
override ACCUMULATE: bool = false; // add to y instead of overwriting it

struct Params {
  count: u32,    // stored positions of this group
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

// Columns c .. c + V - 1 of x for the invocation's 8 tokens: element d of `lo` holds
// tokens 0-3 of column c + d and element d of `hi` tokens 4-7. Unused elements stay 0.
struct XBlock {
  lo: array<vec4<f32>, 8>,
  hi: array<vec4<f32>, 8>,
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

// Column c of x for the four tokens whose rows start at r; 0 past cols when `tail`.
fn x_column(r: vec4<u32>, c: u32, tail: bool) -> vec4<f32> {
  let x = vec4<f32>(src2[r.x + c], src2[r.y + c], src2[r.z + c], src2[r.w + c]);
  return select(x, vec4<f32>(0.0), tail && c >= params.cols);
}

// Loads columns c .. c + V - 1 for 8 tokens (unrolled: loops count toward the cap).
fn load_x(lo: vec4<u32>, hi: vec4<u32>, c: u32, tail: bool) -> XBlock {
  var b = XBlock();
  b.lo[0] = x_column(lo, c, tail);
  b.hi[0] = x_column(hi, c, tail);
  if (V > 1u) { b.lo[1] = x_column(lo, c + 1u, tail); b.hi[1] = x_column(hi, c + 1u, tail); }
  if (V > 2u) { b.lo[2] = x_column(lo, c + 2u, tail); b.hi[2] = x_column(hi, c + 2u, tail); }
  if (V > 3u) { b.lo[3] = x_column(lo, c + 3u, tail); b.hi[3] = x_column(hi, c + 3u, tail); }
  if (V > 4u) { b.lo[4] = x_column(lo, c + 4u, tail); b.hi[4] = x_column(hi, c + 4u, tail); }
  if (V > 5u) { b.lo[5] = x_column(lo, c + 5u, tail); b.hi[5] = x_column(hi, c + 5u, tail); }
  if (V > 6u) { b.lo[6] = x_column(lo, c + 6u, tail); b.hi[6] = x_column(hi, c + 6u, tail); }
  if (V > 7u) { b.lo[7] = x_column(lo, c + 7u, tail); b.hi[7] = x_column(hi, c + 7u, tail); }
  return b;
}

// Adds codeword `index` times the x block to one row's sums for the 8 tokens.
fn add_codeword(acc: ptr<function, array<vec4<f32>, 2>>, index: u32, b: ptr<function, XBlock>) {
  var w = codeword_pair(index, 0u);
  (*acc)[0] += w.x * (*b).lo[0] + w.y * (*b).lo[1];
  (*acc)[1] += w.x * (*b).hi[0] + w.y * (*b).hi[1];
  if (V > 2u) {
    w = codeword_pair(index, 1u);
    (*acc)[0] += w.x * (*b).lo[2] + w.y * (*b).lo[3];
    (*acc)[1] += w.x * (*b).hi[2] + w.y * (*b).hi[3];
  }
  if (V > 4u) {
    w = codeword_pair(index, 2u);
    (*acc)[0] += w.x * (*b).lo[4] + w.y * (*b).lo[5];
    (*acc)[1] += w.x * (*b).hi[4] + w.y * (*b).hi[5];
  }
  if (V > 6u) {
    w = codeword_pair(index, 3u);
    (*acc)[0] += w.x * (*b).lo[6] + w.y * (*b).lo[7];
    (*acc)[1] += w.x * (*b).hi[6] + w.y * (*b).hi[7];
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

// Stores the 8 token outputs of the group's position i (skipped past the group or the tokens).
fn store(i: u32, t0: u32, acc: array<vec4<f32>, 2>) {
  if (i >= params.count) {
    return;
  }
  let p = params.pos0 + i;
  var row = p;
  if (HAS_ORDER) {
    row = src4[p];
  }
  let s = scale_of(row);
  for (var k = 0u; k < 8u; k++) {
    let t = t0 + k;
    if (t < params.tokens) {
      let at = params.y_offset + t * params.ldy + row;
      let value = s * select(acc[1][k - 4u], acc[0][k], k < 4u);
      if (ACCUMULATE) {
        dst[at] += value;
      } else {
        dst[at] = value;
      }
    }
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
  let i0 = gid.x * 4u;
  let t0 = gid.y * 8u;
  if (i0 >= params.count || t0 >= params.tokens) {
    return;
  }

  // x row offsets of the 8 tokens, clamped to the last token
  let last_t = params.tokens - 1u;
  let t = vec4<u32>(0u, 1u, 2u, 3u) + t0;
  let lo = params.x_offset + min(t, vec4<u32>(last_t)) * params.cols;
  let hi = params.x_offset + min(t + 4u, vec4<u32>(last_t)) * params.cols;
  // stream bits of the four positions' first indices; positions past the group repeat the last one
  let last_i = params.count - 1u;
  let i = vec4<u32>(i0, min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
  var bit = (i * params.per_row + params.q0) * params.bits;
  let mask = select((1u << params.bits) - 1u, 0xffffffffu, params.bits >= 32u);
  // vectors that lie wholly inside cols; a padded last vector is handled after the loop
  let full_end = min(params.q1, params.cols / V);
  var acc0 = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
  var acc1 = acc0;
  var acc2 = acc0;
  var acc3 = acc0;
  var q = params.q0;
  for (; q < params.q1; q++) {
    var b = load_x(lo, hi, q * V, q >= full_end);
    add_codeword(&acc0, index_at(bit.x, mask), &b);
    add_codeword(&acc1, index_at(bit.y, mask), &b);
    add_codeword(&acc2, index_at(bit.z, mask), &b);
    add_codeword(&acc3, index_at(bit.w, mask), &b);
    bit += params.bits;
  }

  store(i0, t0, acc0);
  store(i0 + 1u, t0, acc1);
  store(i0 + 2u, t0, acc2);
  store(i0 + 3u, t0, acc3);
}
