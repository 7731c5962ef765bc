// Uniformly quantized (RTN, GPTQ) linear layer for prefill, y[T, rows] = x[T, cols] @ W^T:
//   y[t, r] (+)= sum over c in [c0, c1) of scale[r, g] * (code[r, c] - zero[r, g]) * x[t, c]
// with g = floor(c / group_size). Packing follows kernels/matvec_uniform.wgsl: `bits`-wide
// codes (1 to 8) packed least significant bit first into little-endian u32 words, each
// row starting on a word boundary, a code possibly straddling two words; F16 scales and
// zero points [rows, groups] read as u32 pairs with unpack2x16float.
//
// One invocation computes four consecutive rows for 8 consecutive tokens, so each code is
// decoded once per 8 tokens and each x value loaded once per four rows; rows and tokens
// past the end are clamped on load and skipped on store. Group segments are the same for
// every row. It runs one outer iteration per group segment plus one inner iteration per
// column, at most
// 2 (c1 - c0); the host splits the columns into slices below the 65535-iteration cap,
// and all but the first slice add to y.

override WG: u32 = 64;             // invocations per workgroup along the rows, four rows each
override ACCUMULATE: bool = false; // add to y instead of overwriting it

struct Params {
  rows: u32,          // rows of W (columns of y)
  cols: u32,          // columns of W and row stride of x
  bits: u32,          // code width in bits
  group_size: u32,    // columns per scale and zero point (at most cols)
  groups: u32,        // groups per row, ceil(cols / group_size)
  words_per_row: u32, // ceil(cols * bits / 32)
  c0: u32,            // first column of this dispatch's slice
  c1: u32,            // end of the slice (exclusive)
  tokens: u32,        // rows of x and y
  ldy: u32,           // row stride of y in elements
  x_offset: u32,      // element offset of x[0, 0]
  y_offset: u32,      // element offset of y[0, 0]
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;      // qweight: [rows, words_per_row]
@group(0) @binding(1) var<storage, read> src1: array<u32>;      // scales: [rows, groups] f16, two per word
@group(0) @binding(2) var<storage, read> src2: array<u32>;      // zeros: [rows, groups] f16, two per word
@group(0) @binding(3) var<storage, read> src3: array<f32>;      // x: [tokens, cols]
@group(0) @binding(4) var<storage, read_write> dst: array<f32>; // y: [tokens, rows], row stride ldy
@group(0) @binding(5) var<uniform> params: Params;

// The code at bit `bit` of the row whose words start at `base`, reading the next word when it straddles two.
fn code_at(base: u32, bit: u32, mask: u32) -> f32 {
  let w = base + (bit >> 5u);
  let s = bit & 31u;
  var value = src0[w] >> s;
  if (s + params.bits > 32u) {
    value |= src0[w + 1u] << (32u - s);
  }
  return f32(value & mask);
}

fn half_at(e: u32, zeros: bool) -> f32 {
  if (zeros) {
    return unpack2x16float(src2[e >> 1u])[e & 1u];
  }
  return unpack2x16float(src1[e >> 1u])[e & 1u];
}

// Column c of x for the four tokens whose rows start at r.
fn x_column(r: vec4<u32>, c: u32) -> vec4<f32> {
  return vec4<f32>(src3[r.x + c], src3[r.y + c], src3[r.z + c], src3[r.w + c]);
}

// Stores row r's outputs for the 8 tokens from t0 (skipped past the rows or the tokens).
fn store(r: u32, t0: u32, lo: vec4<f32>, hi: vec4<f32>) {
  if (r >= params.rows) {
    return;
  }
  for (var k = 0u; k < 8u; k++) {
    let t = t0 + k;
    if (t < params.tokens) {
      let at = params.y_offset + t * params.ldy + r;
      let value = select(hi[k - 4u], lo[k], k < 4u);
      if (ACCUMULATE) {
        dst[at] += value;
      } else {
        dst[at] = value;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r0 = gid.x * 4u;
  let t0 = gid.y * 8u;
  if (r0 >= params.rows || t0 >= params.tokens) {
    return;
  }
  let last_t = params.tokens - 1u;
  let t = vec4<u32>(0u, 1u, 2u, 3u) + t0;
  let lo = params.x_offset + min(t, vec4<u32>(last_t)) * params.cols;
  let hi = params.x_offset + min(t + 4u, vec4<u32>(last_t)) * params.cols;
  let last_r = params.rows - 1u;
  let r = vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r));
  let base = r * params.words_per_row;
  let mask = (1u << params.bits) - 1u;
  // acc[2 k] and acc[2 k + 1]: row k's sums for tokens 0-3 and 4-7
  var acc = array<vec4<f32>, 8>();
  var c = params.c0;
  // one segment per group that meets [c0, c1): the scales and zero points are constant inside it
  while (c < params.c1) {
    let g = c / params.group_size;
    let end = min((g + 1u) * params.group_size, params.c1);
    let e = r * params.groups + g;
    let zero = vec4<f32>(half_at(e.x, true), half_at(e.y, true), half_at(e.z, true), half_at(e.w, true));
    // explicitly initialized: a declaration without one may be hoisted and zeroed only once
    var part = array<vec4<f32>, 8>();
    for (; c < end; c++) {
      let bit = c * params.bits;
      let x_lo = x_column(lo, c);
      let x_hi = x_column(hi, c);
      let w = vec4<f32>(code_at(base.x, bit, mask), code_at(base.y, bit, mask), code_at(base.z, bit, mask), code_at(base.w, bit, mask)) - zero;
      part[0] += w.x * x_lo;
      part[1] += w.x * x_hi;
      part[2] += w.y * x_lo;
      part[3] += w.y * x_hi;
      part[4] += w.z * x_lo;
      part[5] += w.z * x_hi;
      part[6] += w.w * x_lo;
      part[7] += w.w * x_hi;
    }
    let scale = vec4<f32>(half_at(e.x, false), half_at(e.y, false), half_at(e.z, false), half_at(e.w, false));
    acc[0] += scale.x * part[0];
    acc[1] += scale.x * part[1];
    acc[2] += scale.y * part[2];
    acc[3] += scale.y * part[3];
    acc[4] += scale.z * part[4];
    acc[5] += scale.z * part[5];
    acc[6] += scale.w * part[6];
    acc[7] += scale.w * part[7];
  }
  store(r0, t0, acc[0], acc[1]);
  store(r0 + 1u, t0, acc[2], acc[3]);
  store(r0 + 2u, t0, acc[4], acc[5]);
  store(r0 + 3u, t0, acc[6], acc[7]);
}
