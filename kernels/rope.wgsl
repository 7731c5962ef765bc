// Rotary position embedding, in place on rows of heads: for each row r (at position
// pos0 + r), head h and pair j < head_dim / 2, the pair (a, b) rotates by the angle
// (pos0 + r) * theta^(-2j / head_dim), read from a table of (cos, sin) built on the host
// in double precision:
//   HALF = false: a = 2j, b = 2j + 1        (adjacent pairs: llama2.c, GGUF)
//   HALF = true:  a = j,  b = j + head_dim/2 (Hugging Face rotate_half)
// One invocation per (row, head, pair), no loops.

override HALF: bool = false;
override WG: u32 = 64;

struct Params {
  rows: u32,       // rows (tokens) to rotate
  n_heads: u32,    // heads per row
  head_dim: u32,   // width of one head (even)
  row_stride: u32, // elements between consecutive rows of dst
  offset: u32,     // element offset of row 0, head 0 in dst
  pos0: u32,       // position of row 0
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // table: [positions, head_dim / 2, 2] (cos, sin)
@group(0) @binding(1) var<storage, read_write> dst: array<f32>; // x: [rows, row_stride], heads at offset + h * head_dim
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  let half = params.head_dim / 2u;
  if (i >= params.rows * params.n_heads * half) {
    return;
  }
  let pair = i % half;
  let head = (i / half) % params.n_heads;
  let row = i / (half * params.n_heads);

  let base = params.offset + row * params.row_stride + head * params.head_dim;
  var a = base + 2u * pair;
  var b = a + 1u;
  if (HALF) {
    a = base + pair;
    b = a + half;
  }
  let t = 2u * ((params.pos0 + row) * half + pair);
  let c = src0[t];
  let s = src0[t + 1u];
  let x0 = dst[a];
  let x1 = dst[b];
  dst[a] = x0 * c - x1 * s;
  dst[b] = x0 * s + x1 * c;
}
