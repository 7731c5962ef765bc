// Uniformly quantized (RTN, GPTQ) linear layer for prefill, y[T, rows] = x[T, cols] @ W^T:
//   y[t, r] (+)= sum over c in [c0, c1) of scale[r, g] * (code[r, c] - zero[r, g]) * x[t, c]
// with g = floor(c / group_size). Packing follows kernels/matvec_uniform.wgsl: `bits`-wide
// codes (1 to 8) packed least significant bit first into little-endian u32 words, each
// row starting on a word boundary, a code possibly straddling two words; F16 scales and
// zero points [rows, groups] read as u32 pairs with unpack2x16float.
//
// One invocation computes one row for 8 consecutive tokens, so each code is decoded once
// per 8 tokens; tokens past the end are clamped on load and skipped on store. It runs one
// outer iteration per group segment plus one inner iteration per column, at most
// 2 (c1 - c0); the host splits the columns into slices below the 65535-iteration cap,
// and all but the first slice add to y.

override WG: u32 = 64;             // invocations per workgroup along the rows
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

fn store(t: u32, r: u32, value: f32) {
  if (t >= params.tokens) {
    return;
  }
  let at = params.y_offset + t * params.ldy + r;
  if (ACCUMULATE) {
    dst[at] += value;
  } else {
    dst[at] = value;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  let t0 = gid.y * 8u;
  if (r >= params.rows || t0 >= params.tokens) {
    return;
  }
  let last = params.tokens - 1u;
  let t = vec4<u32>(0u, 1u, 2u, 3u) + t0;
  let lo = params.x_offset + min(t, vec4<u32>(last)) * params.cols;
  let hi = params.x_offset + min(t + 4u, vec4<u32>(last)) * params.cols;
  let base = r * params.words_per_row;
  let mask = (1u << params.bits) - 1u;
  var acc_lo = vec4<f32>(0.0);
  var acc_hi = vec4<f32>(0.0);
  var c = params.c0;
  // one segment per group that meets [c0, c1): the scale and zero point are constant inside it
  while (c < params.c1) {
    let g = c / params.group_size;
    let end = min((g + 1u) * params.group_size, params.c1);
    let e = r * params.groups + g;
    let zero = half_at(e, true);
    var part_lo = vec4<f32>(0.0);
    var part_hi = vec4<f32>(0.0);
    for (; c < end; c++) {
      let w = code_at(base, c * params.bits, mask) - zero;
      part_lo += w * x_column(lo, c);
      part_hi += w * x_column(hi, c);
    }
    let scale = half_at(e, false);
    acc_lo += scale * part_lo;
    acc_hi += scale * part_hi;
  }
  for (var k = 0u; k < 4u; k++) {
    store(t0 + k, r, acc_lo[k]);
    store(t0 + 4u + k, r, acc_hi[k]);
  }
}
