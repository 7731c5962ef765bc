// Embedding backward into one row chunk of the table gradient: for every token t of a
// slice of rows whose id lies in [row0, row0 + chunk_rows), dst[id - row0, c] += dx[t, c].
// One invocation per column c walks the tokens in order, so repeated ids add without
// races. The host splits the tokens into dispatches of at most ROWS_PER_DISPATCH so no
// invocation passes the 65535-iteration cap.

override WG: u32 = 64;

struct Params {
  tokens: u32,      // tokens in this dispatch
  dim: u32,         // embedding width
  t0: u32,          // first token of this dispatch
  row0: u32,        // first id held by the chunk
  chunk_rows: u32,  // ids held by the chunk
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;      // ids: [T]
@group(0) @binding(1) var<storage, read> src1: array<f32>;      // dx: [T, dim]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>; // dtable chunk: [chunk_rows, dim]
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let c = gid.x + gid.y * groups.x * WG;
  if (c >= params.dim) {
    return;
  }
  for (var t = params.t0; t < params.t0 + params.tokens; t++) {
    let id = src0[t];
    if (id >= params.row0 && id - params.row0 < params.chunk_rows) {
      dst[(id - params.row0) * params.dim + c] += src1[t * params.dim + c];
    }
  }
}
