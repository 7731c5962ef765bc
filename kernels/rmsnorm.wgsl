// RMSNorm of each row: dst[r, i] = src0[r, i] / sqrt(mean_i(src0[r, i]^2) + eps) * src1[i].
//
// One workgroup per row. Each of the WG invocations sums a strided slice of the row
// (ceil(dim / WG) loop iterations, far below the 65535-iteration cap for any model
// width), the first invocation adds the WG partial sums, and all of them write the
// normalised slice. Two barriers per row.

override WG: u32 = 64;

struct Params {
  rows: u32,       // rows to normalise
  dim: u32,        // row length
  src_offset: u32, // element offset of src0[0, 0]
  dst_offset: u32, // element offset of dst[0, 0]
  eps: f32,        // added to the mean square
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;      // x: [rows, dim]
@group(0) @binding(1) var<storage, read> src1: array<f32>;      // weight: [dim]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>; // out: [rows, dim]
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
) {
  let row = wid.x + wid.y * groups.x;
  if (row >= params.rows) {
    return;
  }
  let src = params.src_offset + row * params.dim;
  let out = params.dst_offset + row * params.dim;

  var sum = 0.0;
  for (var i = lid.x; i < params.dim; i += WG) {
    let v = src0[src + i];
    sum += v * v;
  }
  partial[lid.x] = sum;
  workgroupBarrier();
  if (lid.x == 0u) {
    var total = 0.0;
    for (var j = 0u; j < WG; j++) {
      total += partial[j];
    }
    partial[0] = total;
  }
  workgroupBarrier();

  let scale = 1.0 / sqrt(partial[0] / f32(params.dim) + params.eps);
  for (var i = lid.x; i < params.dim; i += WG) {
    dst[out + i] = src0[src + i] * scale * src1[i];
  }
}
