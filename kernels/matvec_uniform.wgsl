// Uniformly quantized (RTN, GPTQ) matrix-vector product for single-token decoding:
//   y[r] (+)= sum over c in [c0, c1) of scale[r, g] * (code[r, c] - zero[r, g]) * x[c]
// with g = floor(c / group_size). Codes are `bits` wide (1 to 8), packed least significant
// bit first into little-endian u32 words, each row starting on a word boundary; a code
// may straddle two words. Scales and zero points are F16 [rows, groups], read as u32
// pairs with unpack2x16float so the kernel needs no shader-f16 feature.
//
// One invocation computes one row. It runs one outer iteration per group segment plus
// one inner iteration per column, at most 2 (c1 - c0); the host splits the columns into
// slices that keep this below the 65535-iteration cap, and all but the first slice add to y.

override WG: u32 = 64;             // invocations per workgroup, one row each
override ACCUMULATE: bool = false; // add to y instead of overwriting it

struct Params {
  rows: u32,          // rows of W and length of y
  cols: u32,          // columns of W and length of x
  bits: u32,          // code width in bits
  group_size: u32,    // columns per scale and zero point (at most cols)
  groups: u32,        // groups per row, ceil(cols / group_size)
  words_per_row: u32, // ceil(cols * bits / 32)
  c0: u32,            // first column of this dispatch's slice
  c1: u32,            // end of the slice (exclusive)
  x_offset: u32,      // element offset of x[0]
  y_offset: u32,      // element offset of y[0]
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;      // qweight: [rows, words_per_row]
@group(0) @binding(1) var<storage, read> src1: array<u32>;      // scales: [rows, groups] f16, two per word
@group(0) @binding(2) var<storage, read> src2: array<u32>;      // zeros: [rows, groups] f16, two per word
@group(0) @binding(3) var<storage, read> src3: array<f32>;      // x: [cols]
@group(0) @binding(4) var<storage, read_write> dst: array<f32>; // y: [rows]
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

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let r = gid.x + gid.y * groups.x * WG;
  if (r >= params.rows) {
    return;
  }
  let base = r * params.words_per_row;
  let mask = (1u << params.bits) - 1u;
  var acc = 0.0;
  var c = params.c0;
  // one segment per group that meets [c0, c1): the scale and zero point are constant inside it
  while (c < params.c1) {
    let g = c / params.group_size;
    let end = min((g + 1u) * params.group_size, params.c1);
    let e = r * params.groups + g;
    let zero = half_at(e, true);
    var part = 0.0;
    for (; c < end; c++) {
      part += (code_at(base, c * params.bits, mask) - zero) * src3[params.x_offset + c];
    }
    acc += half_at(e, false) * part;
  }
  if (ACCUMULATE) {
    dst[params.y_offset + r] += acc;
  } else {
    dst[params.y_offset + r] = acc;
  }
}
