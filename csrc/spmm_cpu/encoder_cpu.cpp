// sparsekit fused encoder pieces (encoder_cpu.h): ISA dispatch and threading. Kernel bodies: encoder_cpu_impl.inc.
//
// Built for the baseline target like spmm_cpu.cpp: the AVX2 / AVX-512 bodies carry target attributes and run only
// after the CPU check of spmm_cpu::isa_supported.
#include "encoder_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "scratch.h"
#include "vec.h"

namespace sparsekit {
namespace encoder_cpu {
namespace {

using spmm_cpu::Activation;
using spmm_cpu::Epilogue;

struct EncoderOps {
  int L;
  void (*attention_item)(const float* qkv, int64_t ldq, int64_t t0, int64_t len, int64_t h, int64_t i0, int64_t i1,
                         const AttentionShape& a, float* ctx, int64_t ldc, float* kt, float* S, float* rel);
  void (*layer_norm_rows)(const float* x, int64_t ldx, const float* res, int64_t ldr, const float* gamma,
                          const float* beta, float eps, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n);
  void (*epilogue_rows_range)(float* y, int64_t ldy, int64_t n, const Epilogue& ep, int64_t m0, int64_t m1);
  void (*rotary_rows_range)(float* qkv, int64_t ldq, const AttentionShape& a, const float* cos, const float* sin,
                            int64_t m0, int64_t m1);
  void (*glu_rows_range)(const float* u, int64_t ldu, int64_t n, int act, float* g, int64_t ldg, int64_t m0,
                         int64_t m1);
};

using spmm_cpu::VecScalar;
#if SK_X86
using spmm_cpu::VecAvx2;
using spmm_cpu::VecAvx512;
#endif

#define SK_NS enc_scalar
#define SK_TARGET
#define SK_VEC VecScalar
#include "encoder_cpu_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#if SK_X86
#define SK_NS enc_avx2
#define SK_TARGET SK_AVX2_TARGET
#define SK_VEC VecAvx2
#include "encoder_cpu_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#define SK_NS enc_avx512
#define SK_TARGET SK_AVX512_TARGET
#define SK_VEC VecAvx512
#include "encoder_cpu_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC
#endif

const EncoderOps& ops_for(Isa isa) {
  TORCH_CHECK_VALUE(spmm_cpu::isa_supported(isa), "sparsekit: ISA ", spmm_cpu::isa_name(isa),
                    " is not supported by this CPU");
#if SK_X86
  if (isa == Isa::kAvx512) return enc_avx512::kEncoderOps;
  if (isa == Isa::kAvx2) return enc_avx2::kEncoderOps;
#endif
  return enc_scalar::kEncoderOps;
}

thread_local Scratch tl_attention;  // keys transposed and scores of one item (each worker thread)
thread_local Scratch tl_ffn;        // sparse_ffn's unfused intermediates (calling thread)

// Rows per parallel work item of the row-wise passes (LayerNorm, epilogue): a parallel region costs a few
// microseconds, more than normalising a handful of rows.
constexpr int64_t kRowGrain = 16;
// Attention work items per thread to aim for (load balance), and the fewest query rows an item takes.
constexpr int64_t kItemsPerThread = 4;
// Query rows of one register block of the attention kernels (kRB of encoder_cpu_impl.inc, at most 6).
constexpr int64_t kMaxQueryRows = 8;
constexpr int64_t kMinQueryBlock = 16;

}  // namespace

void packed_attention(const float* qkv, int64_t ldq, const int64_t* cu, int64_t nseq, const AttentionShape& a,
                      float* ctx, int64_t ldc, Isa isa) {
  TORCH_CHECK_VALUE(a.heads >= 0 && a.dq >= 1 && a.dv >= 1 && a.window >= -1, "sparsekit attention: bad head "
                    "widths or window");
  if (a.heads == 0 || nseq == 0) return;
  const EncoderOps& ops = ops_for(isa);
  // Work items: (sequence, head, block of query rows), the items of sequence s from first[s]. Each item transposes
  // its head's keys, so query rows are split only when there are too few (sequence, head) pairs for the threads.
  int64_t maxlen = 0;
  for (int64_t s = 0; s < nseq; ++s) maxlen = std::max(maxlen, cu[s + 1] - cu[s]);
  const int64_t splits = std::max<int64_t>(1, (kItemsPerThread * at::get_num_threads() + nseq * a.heads - 1) /
                                                  (nseq * a.heads));
  const int64_t qblock = std::max<int64_t>(kMinQueryBlock, (maxlen + splits - 1) / splits);
  std::vector<int64_t> first(nseq + 1, 0);
  for (int64_t s = 0; s < nseq; ++s) first[s + 1] = first[s] + a.heads * ((cu[s + 1] - cu[s] + qblock - 1) / qblock);
  const int64_t nitems = first[nseq];
  if (nitems == 0) return;
  const int64_t lkp = (maxlen + ops.L - 1) / ops.L * ops.L;
  // kt [dq][lkp] + S [rows][lkp], and for relative terms cq [rows][rel_cols] + ck [lkp][rel_cols]
  const size_t scratch = static_cast<size_t>((a.dq + kMaxQueryRows) * lkp +
                                             (a.relative() ? (kMaxQueryRows + lkp) * a.rel_cols : 0));
  TORCH_CHECK_VALUE(!a.relative() || (a.rel_index != nullptr && maxlen - 1 <= a.rel_center),
                    "sparsekit attention: the relative-position index covers distances up to ", a.rel_center,
                    ", the longest sequence needs ", maxlen - 1);
  std::vector<char> failed(static_cast<size_t>(at::get_num_threads()) + 1, 0);
  at::parallel_for(0, nitems, 1, [&](int64_t b, int64_t e) {
    float* buf = tl_attention.get(scratch);
    if (buf == nullptr) {
      failed[std::min<size_t>(at::get_thread_num(), failed.size() - 1)] = 1;
      return;
    }
    int64_t s = std::upper_bound(first.begin(), first.end(), b) - first.begin() - 1;
    for (int64_t item = b; item < e; ++item) {
      while (item >= first[s + 1]) ++s;
      const int64_t len = cu[s + 1] - cu[s];
      const int64_t nqb = (len + qblock - 1) / qblock;
      const int64_t local = item - first[s];
      const int64_t h = local / nqb, qb = local % nqb;
      const int64_t i0 = qb * qblock, i1 = std::min(len, i0 + qblock);
      ops.attention_item(qkv, ldq, cu[s], len, h, i0, i1, a, ctx, ldc, buf, buf + a.dq * lkp,
                         buf + (a.dq + kMaxQueryRows) * lkp);
    }
  });
  for (char f : failed) TORCH_CHECK(!f, "sparsekit attention: out of memory (scratch buffers)");
}

void add_layer_norm(const float* x, int64_t ldx, const float* residual, int64_t ldr, const float* gamma,
                    const float* beta, float eps, float* y, int64_t ldy, int64_t M, int64_t n, Isa isa) {
  TORCH_CHECK_VALUE(n >= 1, "sparsekit layer_norm: at least one feature is needed");
  if (M <= 0) return;
  const EncoderOps& ops = ops_for(isa);
  at::parallel_for(0, M, kRowGrain, [&](int64_t m0, int64_t m1) {
    ops.layer_norm_rows(x, ldx, residual, ldr, gamma, beta, eps, y, ldy, m0, m1, n);
  });
}

void epilogue_rows(float* y, int64_t ldy, int64_t M, int64_t n, const Epilogue& ep, Isa isa) {
  if (M <= 0 || n <= 0 || (ep.act == Activation::kNone && ep.residual == nullptr)) return;
  const EncoderOps& ops = ops_for(isa);
  at::parallel_for(0, M, kRowGrain, [&](int64_t m0, int64_t m1) { ops.epilogue_rows_range(y, ldy, n, ep, m0, m1); });
}

void epilogue_block(float* y, int64_t ldy, int64_t M, int64_t n, const Epilogue& ep, Isa isa) {
  if (M <= 0 || n <= 0 || (ep.act == Activation::kNone && ep.residual == nullptr)) return;
  ops_for(isa).epilogue_rows_range(y, ldy, n, ep, 0, M);
}

void rotary_rows(float* qkv, int64_t ldq, int64_t N, const AttentionShape& a, const float* cos, const float* sin,
                 Isa isa) {
  TORCH_CHECK_VALUE(a.dq % 2 == 0, "sparsekit rotary: the Q·K width per head must be even, got ", a.dq);
  if (N <= 0 || a.heads == 0) return;
  const EncoderOps& ops = ops_for(isa);
  at::parallel_for(0, N, kRowGrain, [&](int64_t m0, int64_t m1) { ops.rotary_rows_range(qkv, ldq, a, cos, sin, m0, m1); });
}

void glu_rows(const float* u, int64_t ldu, int64_t M, int64_t n, Activation act, float* g, int64_t ldg, Isa isa) {
  if (M <= 0 || n <= 0) return;
  const EncoderOps& ops = ops_for(isa);
  at::parallel_for(0, M, kRowGrain, [&](int64_t m0, int64_t m1) {
    ops.glu_rows_range(u, ldu, n, static_cast<int>(act), g, ldg, m0, m1);
  });
}

void sparse_ffn(const float* x, int64_t M, int64_t ldx, const spmm_cpu::GroupedWeight& wi, const float* bias_i,
                Activation act, bool glu, const spmm_cpu::GroupedWeight& wf, const float* bias_f, float* y,
                int64_t ldy, Isa isa, const Epilogue& epilogue) {
  if (spmm_cpu::grouped_ffn(x, M, ldx, wi, bias_i, act, glu, wf, bias_f, y, ldy, isa, epilogue)) return;
  const int64_t rows = wi.out, U = wf.in;
  float* u = tl_ffn.get(static_cast<size_t>(M * (rows + (glu ? U : 0))));
  TORCH_CHECK(u != nullptr, "sparsekit: out of memory (FFN intermediate of ", M, " tokens)");
  Epilogue act_only;
  act_only.act = glu ? Activation::kNone : act;
  spmm_cpu::grouped_linear(x, M, ldx, wi, bias_i, u, rows, isa, act_only);
  const float* h = u;
  if (glu) {
    float* g = u + M * rows;
    glu_rows(u, rows, M, U, act, g, U, isa);
    h = g;
  }
  spmm_cpu::grouped_linear(h, M, U, wf, bias_f, y, ldy, isa, epilogue);
  tl_ffn.trim();
}

}  // namespace encoder_cpu
}  // namespace sparsekit
