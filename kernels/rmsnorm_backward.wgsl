// RMSNorm backward for each row, y = x * r * w with r = (mean(x^2) + eps)^(-1/2):
//   dx[t, i] = r_t w_i dy[t, i] - (r_t^3 / dim) x[t, i] sum_j w_j dy[t, j] x[t, j]
// written to dst (ACCUMULATE adds it, for a residual branch whose gradient is already
// there), and r_t to rstd[t] for the weight gradient (rmsnorm_weight_backward.wgsl).
//
// One workgroup per row; each invocation loops over ceil(dim / WG) elements three times.

override WG: u32 = 64;
override ACCUMULATE: bool = false;

struct Params {
  rows: u32,       // rows (tokens)
  dim: u32,        // row length
  eps: f32,        // added to the mean square
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;        // x: [rows, dim]
@group(0) @binding(1) var<storage, read> src1: array<f32>;        // dy: [rows, dim]
@group(0) @binding(2) var<storage, read> src2: array<f32>;        // weight: [dim]
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;   // dx: [rows, dim]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;  // r: [rows]
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> partial: array<vec2<f32>, WG>;

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
  let base = row * params.dim;

  // (sum x^2, sum w dy x) over the row
  var sums = vec2<f32>(0.0);
  for (var i = lid.x; i < params.dim; i += WG) {
    let x = src0[base + i];
    sums += vec2<f32>(x * x, src2[i] * src1[base + i] * x);
  }
  partial[lid.x] = sums;
  workgroupBarrier();
  if (lid.x == 0u) {
    var total = vec2<f32>(0.0);
    for (var j = 0u; j < WG; j++) {
      total += partial[j];
    }
    partial[0] = total;
  }
  workgroupBarrier();

  let r = 1.0 / sqrt(partial[0].x / f32(params.dim) + params.eps);
  let c = r * r * r * partial[0].y / f32(params.dim);
  if (lid.x == 0u) {
    rstd[row] = r;
  }
  for (var i = lid.x; i < params.dim; i += WG) {
    let g = r * src2[i] * src1[base + i] - c * src0[base + i];
    if (ACCUMULATE) {
      dst[base + i] += g;
    } else {
      dst[base + i] = g;
    }
  }
}
