// Column sums over a slice of rows, accumulated: dst[c] += sum_t f(src0[t, c]) with
// f(v) = v * v when SQUARE (the diagonal of G = sum_t delta_t delta_t^T) and f(v) = v
// otherwise (a bias gradient). One invocation per column; the host splits the rows into
// dispatches of at most ROWS_PER_DISPATCH so no invocation passes the 65535-iteration cap.

override WG: u32 = 64;
override SQUARE: bool = true;

struct Params {
  rows: u32,        // rows in this dispatch
  cols: u32,        // columns
  row0: u32,        // first row of this dispatch
  stride: u32,      // elements between rows of src0
  src_offset: u32,  // element offset of src0[0, 0]
  dst_offset: u32,  // element offset of dst[0]
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // x: [T, stride]
@group(0) @binding(1) var<storage, read_write> dst: array<f32>; // sums: [cols]
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let c = gid.x + gid.y * groups.x * WG;
  if (c >= params.cols) {
    return;
  }
  var sum = 0.0;
  for (var t = params.row0; t < params.row0 + params.rows; t++) {
    let v = src0[params.src_offset + t * params.stride + c];
    sum += select(v, v * v, SQUARE);
  }
  dst[params.dst_offset + c] += sum;
}
