// matmul.wgsl with vec4 loads: C[M, N] = op(A) @ op(B), or += with ACCUMULATE.
//   op(A) is [M, K]: A is stored [M, K] (row stride lda), or [K, M] with TRANS_A.
//   op(B) is [K, N]: B is stored [K, N] (row stride ldb), or [N, K] with TRANS_B.
// The host uses this variant only when every stored row is read in whole vec4s: the
// offsets and strides of A and B are multiples of 4, and so is the contiguous extent of
// each operand (K for A and for TRANS_B B, M for TRANS_A A, N for plain B). Loads are
// then twice as fast as scalar ones on llvmpipe.
//
// Each invocation computes a 4x4 block of C from 4x4 blocks of op(A) and op(B) per step
// of 4 along K; transposed operands are turned around in registers. No workgroup memory,
// no barriers. One invocation runs K / 4 loop iterations; the host keeps K below the
// 65535-iteration cap per dispatch and accumulates slices (src/ops/matmul.ts).

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ACCUMULATE: bool = false;
override WG_X: u32 = 8; // invocations along N (each covers 4 columns)
override WG_Y: u32 = 8; // invocations along M (each covers 4 rows)

struct Params {
  m: u32,        // rows of C
  n: u32,        // columns of C
  k: u32,        // inner dimension of this dispatch, a multiple of 4 where it is contiguous
  lda: u32,      // row stride of A as stored, in elements (a multiple of 4)
  ldb: u32,      // row stride of B as stored, in elements (a multiple of 4)
  ldc: u32,      // row stride of C, in elements
  a_offset: u32, // element offset of op(A)[0, 0] (a multiple of 4)
  b_offset: u32, // element offset of op(B)[0, 0] (a multiple of 4)
  c_offset: u32, // element offset of C[0, 0]
}

@group(0) @binding(0) var<storage, read> src0: array<vec4<f32>>; // A: [M, K] or [K, M] (TRANS_A)
@group(0) @binding(1) var<storage, read> src1: array<vec4<f32>>; // B: [K, N] or [N, K] (TRANS_B)
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;  // C: [M, N], row stride ldc
@group(0) @binding(3) var<uniform> params: Params;

// Stored row `row` of A at elements col..col+3 (col a multiple of 4).
fn a_vec(row: u32, col: u32) -> vec4<f32> {
  return src0[(params.a_offset + row * params.lda + col) / 4u];
}

fn b_vec(row: u32, col: u32) -> vec4<f32> {
  return src1[(params.b_offset + row * params.ldb + col) / 4u];
}

// The 4x4 block op(A)[m.., k..k+3] as a matrix whose column i is op(A) row m_i.
fn a_block(m: vec4<u32>, m_base: u32, k: u32) -> mat4x4<f32> {
  if (TRANS_A) {
    // stored rows k..k+3 hold op(A) columns, contiguous along M
    return transpose(mat4x4<f32>(a_vec(k, m_base), a_vec(k + 1u, m_base), a_vec(k + 2u, m_base), a_vec(k + 3u, m_base)));
  }
  return mat4x4<f32>(a_vec(m.x, k), a_vec(m.y, k), a_vec(m.z, k), a_vec(m.w, k));
}

// The 4x4 block op(B)[k..k+3, n..] as a matrix whose column kk is op(B) row k + kk.
fn b_block(n: vec4<u32>, n_base: u32, k: u32) -> mat4x4<f32> {
  if (TRANS_B) {
    // stored rows n_j hold op(B) columns, contiguous along K
    return transpose(mat4x4<f32>(b_vec(n.x, k), b_vec(n.y, k), b_vec(n.z, k), b_vec(n.w, k)));
  }
  return mat4x4<f32>(b_vec(k, n_base), b_vec(k + 1u, n_base), b_vec(k + 2u, n_base), b_vec(k + 3u, n_base));
}

fn store(m: u32, n: u32, row: vec4<f32>) {
  if (m >= params.m) {
    return;
  }
  let base = params.c_offset + m * params.ldc;
  for (var j = 0u; j < 4u; j++) {
    if (n + j < params.n) {
      if (ACCUMULATE) {
        dst[base + n + j] += row[j];
      } else {
        dst[base + n + j] = row[j];
      }
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n_base = gid.x * 4u;
  let m_base = gid.y * 4u;
  if (n_base >= params.n || m_base >= params.m) {
    return;
  }
  // clamped row and column indices; only the non-contiguous dimension can run past
  let m = min(vec4<u32>(m_base) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.m - 1u));
  let n = min(vec4<u32>(n_base) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.n - 1u));

  // acc * e_i is row m_i of the C block (a vec4 over the four columns)
  var acc = mat4x4<f32>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
  for (var k = 0u; k < params.k; k += 4u) {
    acc += b_block(n, n_base, k) * a_block(m, m_base, k);
  }

  store(m_base, n_base, acc[0]);
  store(m_base + 1u, n_base, acc[1]);
  store(m_base + 2u, n_base, acc[2]);
  store(m_base + 3u, n_base, acc[3]);
}
