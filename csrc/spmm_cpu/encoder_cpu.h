// sparsekit's fused CPU encoder: the pieces around the sparse Linears of a post-LayerNorm (BERT-layout) encoder
// layer, and the layer itself.
//
// Token layout: the real tokens of a batch are *packed*: x is [N, hidden] row-major holding the tokens of
// sequence s at rows cu_seqlens[s] .. cu_seqlens[s + 1] - 1 (cu_seqlens: int64 [nseq + 1], cu_seqlens[0] == 0,
// non-decreasing, cu_seqlens[nseq] == N). Padding never enters a Linear; attention runs per sequence.
//
// One layer (encoder_layer below), with H heads of dq Q·K and dv V dimensions each (zero-padded widths, see
// export/modeling.py pad_layout):
//   qkv = x @ Wqkv^T + bqkv                       [N, 2 H dq + H dv]: Q | K | V, head h of Q at columns h dq ..
//   ctx = attention(qkv) per sequence and head     [N, H dv], softmax(scale Q K^T) V
//   h   = LayerNorm1(ctx @ Wo^T + bo + x)          the residual add in the Linear's epilogue, LN right after
//   u   = act(h @ Wi^T + bi)                       [N, ffn], the activation in the Linear's epilogue
//   y   = LayerNorm2(u @ Wf^T + bf + h)
// Each of the four matrices is dense (ATen's addmm, i.e. the BLAS torch uses) or a packed sparse weight
// (spmm_cpu.h); the layer driver (encoder_binding.cpp) calls one or the other.
//
// Numerics: every piece is fp32. Softmax subtracts the row maximum; exp is vec_math.inc's (relative error
// ~1e-7); LayerNorm uses the biased variance like torch. Results differ from torch's by rounding only.
#pragma once

#include <cstdint>

#include "spmm_cpu.h"

namespace sparsekit {
namespace encoder_cpu {

using spmm_cpu::Isa;

/// Where Q, K and V of each head are in a row of the packed qkv matrix (row stride ldq): head h of Q at columns
/// q_off + h * dq .. + dq - 1, of K at k_off + h * dq, of V at v_off + h * dv.
struct AttentionShape {
  int64_t heads = 0;
  int64_t dq = 0;  ///< Q·K dimensions per head (>= 1)
  int64_t dv = 0;  ///< V dimensions per head (>= 1)
  int64_t q_off = 0, k_off = 0, v_off = 0;
  float scale = 1.0f;  ///< multiplies Q K^T (1 / sqrt(original head dim))
};

/// ctx[t, h dv .. h dv + dv - 1] = sum_j softmax_j(scale q_t . k_j) v_j over the tokens j of t's sequence, for
/// every packed token t and head h. ctx: float32 rows of stride ldc (>= heads * dv), N = cu_seqlens[nseq] rows.
/// A sequence of length 0 contributes nothing. Runs on up to at::get_num_threads() threads.
void packed_attention(const float* qkv, int64_t ldq, const int64_t* cu_seqlens, int64_t nseq,
                      const AttentionShape& shape, float* ctx, int64_t ldc, Isa isa);

/// y[m, :] = LayerNorm(x[m, :] + residual[m, :]) * gamma + beta over n features, for m in [0, M); residual may be
/// nullptr; y may equal x (in place), rows of stride ldx / ldr / ldy.
void add_layer_norm(const float* x, int64_t ldx, const float* residual, int64_t ldr, const float* gamma,
                    const float* beta, float eps, float* y, int64_t ldy, int64_t M, int64_t n, Isa isa);

/// The fused epilogue of spmm_cpu.h (activation, then + residual) applied in place to y [M, n] (stride ldy): the
/// epilogue of a dense (BLAS) Linear.
void epilogue_rows(float* y, int64_t ldy, int64_t M, int64_t n, const spmm_cpu::Epilogue& epilogue, Isa isa);

}  // namespace encoder_cpu
}  // namespace sparsekit
