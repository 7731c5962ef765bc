// Vector-quantized matrix-vector product for single-token decoding, one stage of one
// channel group of a layer per dispatch:
//   y[row(p)] (+)= scale[row(p)] * sum_q dot(codebook[index(p, q)], x[q V .. q V + V))
// for the group's stored positions p in [pos0, pos0 + count) and vectors q in [q0, q1),
// with row(p) = channel_order[p] under HAS_ORDER and p otherwise. The host records one
// dispatch per (group, stage, column slice); all but the first add to y, so residual
// stages and column slices are summed in f32.
//
// Indices are `bits` wide (1 to 32), packed least significant bit first into
// little-endian u32 words: index (p, q) starts at stream bit ((p - pos0) * per_row + q) * bits
// and may straddle two words. The codebook is F16 [K, V] with two halves per u32, read
// with unpack2x16float so the kernel needs no shader-f16 feature. A variant with
// `enable f16;` would read the same bytes, fit the same codebooks in workgroup memory and
// still accumulate in f32, so there is none. With CB_SHARED the
// workgroup first copies it into workgroup memory (CB_WORDS words; the host checks that
// against maxComputeWorkgroupStorageSize), otherwise every read goes to storage. Padding
// elements of the last vector (when cols is not a multiple of V) meet x = 0.
//
// One invocation computes four output rows (consecutive stored positions), so each x
// value is loaded once per four rows; positions past the group are clamped on load and
// skipped on store. It runs CB_WORDS / WG copy iterations plus q1 - q0 vector
// iterations; the host keeps that sum below the 65535-iteration cap.
//
// NOTE: one invocation walks whole rows, which suits CPU adapters (lavapipe) but leaves a
// many-core GPU mostly idle on a small group; splitting columns across a workgroup with
// a reduction would be the GPU-tuned form. It has not been measured on a hardware GPU.

override V: u32 = 4;               // vector length, 1 to 8
override WG: u32 = 64;             // invocations per workgroup, four rows each
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
  cols: u32,     // columns of W and length of x
  bits: u32,     // index width in bits
  x_offset: u32, // element offset of x[0]
  y_offset: u32, // element offset of y[0]
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;      // indices: [count * per_row] packed, bits each
@group(0) @binding(1) var<storage, read> src1: array<u32>;      // codebook: [K, V] f16, two per word
@group(0) @binding(2) var<storage, read> src2: array<f32>;      // x: [cols]
@group(0) @binding(3) var<storage, read> src3: array<u32>;      // scales: [rows] f16 in row order, two per word
@group(0) @binding(4) var<storage, read> src4: array<u32>;      // channel_order: [rows] stored position -> row (HAS_ORDER)
@group(0) @binding(5) var<storage, read_write> dst: array<f32>; // y: [rows]
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> codebook: array<u32, CB_WORDS>;

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

// x[c + 2j] and x[c + 2j + 1]; past the vector, and past cols when `tail`, the value is 0.
fn x_pair(c: u32, j: u32, tail: bool) -> vec2<f32> {
  let a = c + 2u * j;
  var x0 = src2[params.x_offset + a];
  var x1 = 0.0;
  if (2u * j + 1u < V) {
    x1 = src2[params.x_offset + a + 1u];
  }
  if (tail) {
    x0 = select(0.0, x0, a < params.cols);
    x1 = select(0.0, x1, a + 1u < params.cols);
  }
  return vec2<f32>(x0, x1);
}

// The V inputs that start at column c, as up to four pairs (unrolled: loops count toward the cap).
fn x_vector(c: u32, tail: bool) -> array<vec2<f32>, 4> {
  var xs = array<vec2<f32>, 4>(x_pair(c, 0u, tail), vec2<f32>(0.0), vec2<f32>(0.0), vec2<f32>(0.0));
  if (V > 2u) {
    xs[1] = x_pair(c, 1u, tail);
  }
  if (V > 4u) {
    xs[2] = x_pair(c, 2u, tail);
  }
  if (V > 6u) {
    xs[3] = x_pair(c, 3u, tail);
  }
  return xs;
}

// Dot product of codeword `index` with the inputs `xs` of one vector.
fn vector_dot(index: u32, xs: array<vec2<f32>, 4>) -> f32 {
  var acc = dot(codeword_pair(index, 0u), xs[0]);
  if (V > 2u) {
    acc += dot(codeword_pair(index, 1u), xs[1]);
  }
  if (V > 4u) {
    acc += dot(codeword_pair(index, 2u), xs[2]);
  }
  if (V > 6u) {
    acc += dot(codeword_pair(index, 3u), xs[3]);
  }
  return acc;
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

// Stores the output of the group's position i (skipped past the group).
fn store(i: u32, value: f32) {
  if (i >= params.count) {
    return;
  }
  let p = params.pos0 + i;
  var row = p;
  if (HAS_ORDER) {
    row = src4[p];
  }
  if (ACCUMULATE) {
    dst[params.y_offset + row] += scale_of(row) * value;
  } else {
    dst[params.y_offset + row] = scale_of(row) * value;
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
  if (i0 >= params.count) {
    return;
  }

  // stream bits of the four positions' first indices; positions past the group repeat the last one
  let last = params.count - 1u;
  let i = vec4<u32>(i0, min(i0 + 1u, last), min(i0 + 2u, last), min(i0 + 3u, last));
  var bit = (i * params.per_row + params.q0) * params.bits;
  let mask = select((1u << params.bits) - 1u, 0xffffffffu, params.bits >= 32u);
  // vectors that lie wholly inside cols; a padded last vector is handled after the loop
  let full_end = min(params.q1, params.cols / V);
  var acc = vec4<f32>(0.0);
  var q = params.q0;
  for (; q < full_end; q++) {
    let xs = x_vector(q * V, false);
    acc += vec4<f32>(
      vector_dot(index_at(bit.x, mask), xs),
      vector_dot(index_at(bit.y, mask), xs),
      vector_dot(index_at(bit.z, mask), xs),
      vector_dot(index_at(bit.w, mask), xs),
    );
    bit += params.bits;
  }
  if (q < params.q1) {
    let xs = x_vector(q * V, true);
    acc += vec4<f32>(
      vector_dot(index_at(bit.x, mask), xs),
      vector_dot(index_at(bit.y, mask), xs),
      vector_dot(index_at(bit.z, mask), xs),
      vector_dot(index_at(bit.w, mask), xs),
    );
  }

  store(i0, acc.x);
  store(i0 + 1u, acc.y);
  store(i0 + 2u, acc.z);
  store(i0 + 3u, acc.w);
}
