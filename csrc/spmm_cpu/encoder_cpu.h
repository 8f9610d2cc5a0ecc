// sparsekit's fused CPU encoder: the pieces around the sparse Linears of an encoder layer -- post-LayerNorm
// (BERT layout) or pre-LayerNorm with rotary positions, a GLU FFN and sliding-window attention (ModernBERT).
//
// Token layout: the real tokens of a batch are *packed*: x is [N, hidden] row-major holding the tokens of
// sequence s at rows cu_seqlens[s] .. cu_seqlens[s + 1] - 1 (cu_seqlens: int64 [nseq + 1], cu_seqlens[0] == 0,
// non-decreasing, cu_seqlens[nseq] == N). Padding never enters a Linear; attention runs per sequence.
//
// One post-LayerNorm layer, with H heads of dq Q·K and dv V dimensions each (zero-padded widths, see
// export/modeling.py pad_layout):
//   qkv = x @ Wqkv^T + bqkv                       [N, 2 H dq + H dv]: Q | K | V, head h of Q at columns h dq ..
//   ctx = attention(qkv) per sequence and head     [N, H dv], softmax(scale Q K^T) V
//   h   = LayerNorm1(ctx @ Wo^T + bo + x)          the residual add in the Linear's epilogue, LN right after
//   u   = act(h @ Wi^T + bi)                       [N, ffn], the activation in the Linear's epilogue
//   y   = LayerNorm2(u @ Wf^T + bf + h)
// DeBERTa's layer is the post-LayerNorm one with relative-position terms in every score (AttentionShape).
// A pre-LayerNorm layer (ModernBERT):
//   qkv = LayerNorm1(x) @ Wqkv^T + bqkv            LayerNorm1 may be absent (ModernBERT's first layer)
//   Q, K <- rotary(Q, K) with the cos / sin of each token's position (rotary_rows)
//   ctx = attention(qkv), within a window |i - j| <= w when the layer has one
//   h   = ctx @ Wo^T + bo + x
//   y   = FFN(LayerNorm2(h)) + h
// The FFN is act(h Wi^T + bi) Wf^T + bf, or with a GLU (Wi stacks the FFN-in rows on the gate rows)
// (act(a) * g) Wf^T + bf where [a | g] = h Wi^T + bi (glu_rows).
// Each of the four matrices is dense (ATen's addmm, i.e. the BLAS torch uses) or a packed sparse weight
// (spmm_cpu.h); the layer driver (encoder_binding.cpp) calls one or the other. An FFN whose two matrices are both
// sparse fp32 runs as sparse_ffn (spmm_cpu::grouped_ffn, no row-major intermediate, where it can).
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
  int64_t window = -1;  ///< >= 0: query i attends to the keys j with |i - j| <= window only; -1: to all keys
  /// DeBERTa's disentangled relative-position terms, both optional (nullptr: absent). Every score gets
  ///   scale * (q_i . posK[r] + k_j . posQ[r]),   r = rel_index[i - j + rel_center]  (0 <= r < rel_cols)
  /// (i, j: positions in the sequence). pos_key_t / pos_query_t: float32 [heads][dq][rel_cols], head h's
  /// posK^T / posQ^T (c2p / p2c); rel_index: int32, defined for |i - j| <= rel_center.
  const float* pos_key_t = nullptr;
  const float* pos_query_t = nullptr;
  int64_t rel_cols = 0;
  const int32_t* rel_index = nullptr;
  int64_t rel_center = 0;
  bool relative() const { return pos_key_t != nullptr || pos_query_t != nullptr; }
};

/// ctx[t, h dv .. h dv + dv - 1] = sum_j softmax_j(scale q_t . k_j) v_j over the tokens j of t's sequence, for
/// every packed token t and head h (over the keys j with |t - j| <= a.window only, when a.window >= 0). ctx: float32 rows of stride ldc (>= heads * dv), N = cu_seqlens[nseq] rows.
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

/// epilogue_rows on the calling thread only: for a small block of y (epilogue.residual pointing at the block's
/// first residual value) that a kernel's worker has just written.
void epilogue_block(float* y, int64_t ldy, int64_t M, int64_t n, const spmm_cpu::Epilogue& epilogue, Isa isa);

/// Rotary position embedding of Q and K in place, as Hugging Face's apply_rotary_pos_emb: for every token t and
/// head h, with x = the head's dq values (Q and K alike), x1 / x2 its first / second half,
///   x <- x * cos[t] + [-x2 | x1] * sin[t]
/// cos, sin: float32 [N, dq] (rows of stride dq), the token's position already applied. dq must be even.
void rotary_rows(float* qkv, int64_t ldq, int64_t N, const AttentionShape& a, const float* cos, const float* sin,
                 Isa isa);

/// The GLU of a gated FFN: g[m, o] = act(u[m, o]) * u[m, n + o] for o < n, m < M (u rows of stride ldu >= 2 n,
/// g rows of stride ldg >= n).
void glu_rows(const float* u, int64_t ldu, int64_t M, int64_t n, spmm_cpu::Activation act, float* g, int64_t ldg,
              Isa isa);

/// The FFN of a layer whose two matrices are packed sparse fp32: y = epilogue(h Wf^T + bias_f) with
/// h = act(x Wi^T + bias_i), or with glu (Wi stacks the FFN-in rows on the gate rows) the glu_rows of x Wi^T + bias_i.
/// spmm_cpu::grouped_ffn (no row-major intermediate) where it applies, else the unfused Linears (grouped_linear with
/// the activation in its epilogue, or without it then glu_rows; then grouped_linear with `epilogue`): the same bits
/// either way. Shapes as grouped_ffn's.
void sparse_ffn(const float* x, int64_t M, int64_t ldx, const spmm_cpu::GroupedWeight& wi, const float* bias_i,
                spmm_cpu::Activation act, bool glu, const spmm_cpu::GroupedWeight& wf, const float* bias_f, float* y,
                int64_t ldy, Isa isa, const spmm_cpu::Epilogue& epilogue);

}  // namespace encoder_cpu
}  // namespace sparsekit
