// Matrix-vector product for single-token decoding: y[N] = W[N, K] @ x[K], or += with
// ACCUMULATE. W is stored row-major [N, K] (row stride ldw), as Hugging Face stores a
// linear layer's weight [out, in], so this is y = W x for one token.
//
// Each invocation computes 4 consecutive outputs, reading x once per step of 4 along K
// as a vec4 shared by the 4 rows; no workgroup memory. The host uses this kernel only
// when K, ldw and the offsets of W and x are multiples of 4 (otherwise matmul.wgsl with
// M = 1 runs). One invocation runs K / 4 loop iterations; the host keeps K below the
// 65535-iteration cap per dispatch and accumulates slices (src/ops/matvec.ts).
//
// NOTE: one invocation walks whole rows, so on GPUs with coalescing memory this reads
// W with a row-sized stride between neighbouring invocations; it is correct, not tuned.

override ACCUMULATE: bool = false;
override WG: u32 = 64;

struct Params {
  n: u32,        // rows of W and length of y
  k: u32,        // columns of W read by this dispatch and length of x (multiple of 4)
  ldw: u32,      // row stride of W in elements (multiple of 4)
  w_offset: u32, // element offset of W[0, 0] (multiple of 4)
  x_offset: u32, // element offset of x[0] (multiple of 4)
  y_offset: u32, // element offset of y[0]
}

@group(0) @binding(0) var<storage, read> src0: array<vec4<f32>>; // W: [N, K], row stride ldw
@group(0) @binding(1) var<storage, read> src1: array<vec4<f32>>; // x: [K]
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;  // y: [N]
@group(0) @binding(3) var<uniform> params: Params;

fn w_vec(row: u32, col: u32) -> vec4<f32> {
  return src0[(params.w_offset + row * params.ldw + col) / 4u];
}

fn store(row: u32, value: f32) {
  if (row >= params.n) {
    return;
  }
  if (ACCUMULATE) {
    dst[params.y_offset + row] += value;
  } else {
    dst[params.y_offset + row] = value;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row0 = (gid.x + gid.y * groups.x * WG) * 4u;
  if (row0 >= params.n) {
    return;
  }
  // rows past the end are clamped on load and skipped on store
  let last = params.n - 1u;
  let r1 = min(row0 + 1u, last);
  let r2 = min(row0 + 2u, last);
  let r3 = min(row0 + 3u, last);
  var acc = vec4<f32>(0.0);
  for (var k = 0u; k < params.k; k += 4u) {
    let x = src1[(params.x_offset + k) / 4u];
    acc += vec4<f32>(dot(w_vec(row0, k), x), dot(w_vec(r1, k), x), dot(w_vec(r2, k), x), dot(w_vec(r3, k), x));
  }
  store(row0, acc.x);
  store(row0 + 1u, acc.y);
  store(row0 + 2u, acc.z);
  store(row0 + 3u, acc.w);
}
