// Uniformly quantized (RTN, GPTQ) matrix-vector product for single-token decoding:
//   y[r] (+)= sum over c in [c0, c1) of scale[r, g] * (code[r, c] - zero[r, g]) * x[c]
// with g = floor(c / group_size). Codes are `bits` wide (1 to 8), packed least significant
// bit first into little-endian u32 words, each row starting on a word boundary; a code
// may straddle two words. Scales and zero points are F16 [rows, groups], read as u32
// pairs with unpack2x16float so the kernel needs no shader-f16 feature.
//
// One invocation computes four consecutive rows, so each x value is loaded once per four
// rows; rows past the end are clamped on load and skipped on store. Group segments are
// the same for every row. It runs one outer iteration per group segment plus
// one inner iteration per column, at most 2 (c1 - c0); the host splits the columns into
// slices that keep this below the 65535-iteration cap, and all but the first slice add to y.

override WG: u32 = 64;             // invocations per workgroup, four rows each
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

// Codes at bit `bit` of four rows whose words start at `base`.
fn codes_at(base: vec4<u32>, bit: u32, mask: u32) -> vec4<f32> {
  return vec4<f32>(code_at(base.x, bit, mask), code_at(base.y, bit, mask), code_at(base.z, bit, mask), code_at(base.w, bit, mask));
}

fn halves_at(e: vec4<u32>, zeros: bool) -> vec4<f32> {
  return vec4<f32>(half_at(e.x, zeros), half_at(e.y, zeros), half_at(e.z, zeros), half_at(e.w, zeros));
}

fn store(r: u32, value: f32) {
  if (r >= params.rows) {
    return;
  }
  if (ACCUMULATE) {
    dst[params.y_offset + r] += value;
  } else {
    dst[params.y_offset + r] = value;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let r0 = (gid.x + gid.y * groups.x * WG) * 4u;
  if (r0 >= params.rows) {
    return;
  }
  let last = params.rows - 1u;
  let r = vec4<u32>(r0, min(r0 + 1u, last), min(r0 + 2u, last), min(r0 + 3u, last));
  let base = r * params.words_per_row;
  let mask = (1u << params.bits) - 1u;
  var acc = vec4<f32>(0.0);
  var c = params.c0;
  // one segment per group that meets [c0, c1): the scales and zero points are constant inside it
  while (c < params.c1) {
    let g = c / params.group_size;
    let end = min((g + 1u) * params.group_size, params.c1);
    let e = r * params.groups + g;
    let zero = halves_at(e, true);
    var part = vec4<f32>(0.0);
    for (; c < end; c++) {
      part += (codes_at(base, c * params.bits, mask) - zero) * src3[params.x_offset + c];
    }
    acc += halves_at(e, false) * part;
  }
  store(r0, acc.x);
  store(r0 + 1u, acc.y);
  store(r0 + 2u, acc.z);
  store(r0 + 3u, acc.w);
}
