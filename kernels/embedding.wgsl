// Token embedding lookup from one row chunk of the table: for each token t whose id
// lies in [row0, row0 + rows), dst[t, :] = src1[id - row0, :]. Tables larger than one
// storage binding are split into row chunks and looked up one dispatch per chunk.
// One invocation per output element.

override WG: u32 = 64;

struct Params {
  tokens: u32,     // tokens to look up
  dim: u32,        // embedding width
  row0: u32,       // first token id held by this chunk
  rows: u32,       // token ids held by this chunk
  ids_offset: u32, // index of the first id in src0
  dst_offset: u32, // element offset of dst[0, 0]
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;      // ids: [tokens]
@group(0) @binding(1) var<storage, read> src1: array<f32>;      // table chunk: [rows, dim]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>; // out: [tokens, dim]
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = gid.x + gid.y * groups.x * WG;
  if (i >= params.tokens * params.dim) {
    return;
  }
  let t = i / params.dim;
  let c = i % params.dim;
  let id = src0[params.ids_offset + t];
  if (id < params.row0 || id - params.row0 >= params.rows) {
    return;
  }
  dst[params.dst_offset + i] = src1[(id - params.row0) * params.dim + c];
}
