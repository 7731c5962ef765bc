// General f32 matrix product, register-tiled: C[M, N] = op(A) @ op(B), or
// C[M, N] += op(A) @ op(B) with ACCUMULATE.
//   op(A) is [M, K]: A is stored [M, K] (row stride lda), or [K, M] with TRANS_A.
//   op(B) is [K, N]: B is stored [K, N] (row stride ldb), or [N, K] with TRANS_B.
// A linear layer y = x @ W^T with W stored [out, in] is TRANS_B with B = W.
//
// Each invocation computes a 4x4 block of C in registers and reads A and B straight
// from storage: no workgroup memory and no barriers, which is the fastest layout on
// software adapters (llvmpipe) and stays correct everywhere. Out-of-range rows and
// columns are clamped on load and skipped on store.
//
// Loop cap: one invocation runs K / 4 + 3 loop iterations, so the host splits K into
// slices below the 65535-iteration cap and accumulates them (src/ops/matmul.ts).

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ACCUMULATE: bool = false;
override WG_X: u32 = 8; // invocations along N (each covers 4 columns)
override WG_Y: u32 = 8; // invocations along M (each covers 4 rows)

struct Params {
  m: u32,        // rows of C
  n: u32,        // columns of C
  k: u32,        // inner dimension of this dispatch
  lda: u32,      // row stride of A as stored, in elements
  ldb: u32,      // row stride of B as stored, in elements
  ldc: u32,      // row stride of C, in elements
  a_offset: u32, // element offset of op(A)[0, 0]
  b_offset: u32, // element offset of op(B)[0, 0]
  c_offset: u32, // element offset of C[0, 0]
}

@group(0) @binding(0) var<storage, read> src0: array<f32>;       // A: [M, K] or [K, M] (TRANS_A)
@group(0) @binding(1) var<storage, read> src1: array<f32>;       // B: [K, N] or [N, K] (TRANS_B)
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;  // C: [M, N], row stride ldc
@group(0) @binding(3) var<uniform> params: Params;

fn load_a(m: u32, k: u32) -> f32 {
  if (TRANS_A) {
    return src0[params.a_offset + k * params.lda + m];
  }
  return src0[params.a_offset + m * params.lda + k];
}

fn load_b(k: u32, n: u32) -> f32 {
  if (TRANS_B) {
    return src1[params.b_offset + n * params.ldb + k];
  }
  return src1[params.b_offset + k * params.ldb + n];
}

// Row k of op(B) at the invocation's four columns.
fn b_row(k: u32, n0: u32, n1: u32, n2: u32, n3: u32) -> vec4<f32> {
  return vec4<f32>(load_b(k, n0), load_b(k, n1), load_b(k, n2), load_b(k, n3));
}

// Four consecutive inner elements k..k+3 of op(A) row m.
fn a_quad(m: u32, k: u32) -> vec4<f32> {
  return vec4<f32>(load_a(m, k), load_a(m, k + 1u), load_a(m, k + 2u), load_a(m, k + 3u));
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
  let m_last = params.m - 1u;
  let n_last = params.n - 1u;
  let m0 = m_base;
  let m1 = min(m_base + 1u, m_last);
  let m2 = min(m_base + 2u, m_last);
  let m3 = min(m_base + 3u, m_last);
  let n0 = n_base;
  let n1 = min(n_base + 1u, n_last);
  let n2 = min(n_base + 2u, n_last);
  let n3 = min(n_base + 3u, n_last);

  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  var k = 0u;
  for (; k + 4u <= params.k; k += 4u) {
    let b0 = b_row(k, n0, n1, n2, n3);
    let b1 = b_row(k + 1u, n0, n1, n2, n3);
    let b2 = b_row(k + 2u, n0, n1, n2, n3);
    let b3 = b_row(k + 3u, n0, n1, n2, n3);
    let a0 = a_quad(m0, k);
    let a1 = a_quad(m1, k);
    let a2 = a_quad(m2, k);
    let a3 = a_quad(m3, k);
    acc0 += a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
    acc1 += a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
    acc2 += a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
    acc3 += a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
  }
  // K remainder: at most 3 iterations
  for (; k < params.k; k++) {
    let b = b_row(k, n0, n1, n2, n3);
    acc0 += load_a(m0, k) * b;
    acc1 += load_a(m1, k) * b;
    acc2 += load_a(m2, k) * b;
    acc3 += load_a(m3, k) * b;
  }

  store(m_base, n_base, acc0);
  store(m_base + 1u, n_base, acc1);
  store(m_base + 2u, n_base, acc2);
  store(m_base + 3u, n_base, acc3);
}
