// sparsekit CPU sparse x dense Linear kernels: ISA dispatch and the threaded driver (vector back-ends: vec.h).
// The kernel bodies live in spmm_cpu_impl.inc (compiled three times); see spmm_cpu.h for the layout.
//
// This file must be compiled for the baseline target (no -march=native, no -mavx*): the AVX2 and
// AVX-512 code is enabled per function with target attributes and only run after a CPU check.
#include "spmm_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#if defined(_WIN32)
#include <malloc.h>
#endif
#include <cstring>
#include <memory>
#include <vector>

#include "scratch.h"
#include "vec.h"
#include "work_split.h"

namespace sparsekit {
namespace spmm_cpu {
namespace {

// One call's operands.
struct Problem {
  const float* x;
  int64_t M;
  int64_t ldx;
  GroupedWeight w;
  const float* bias;
  float* y;
  int64_t ldy;
  Epilogue ep;
};

// Consecutive token tiles (the driver uses one at a time), transposed into xt [ntiles][in][Mt].
struct TokenChunk {
  int64_t m0;      // first token of the chunk
  int64_t mend;    // one past its last token (<= M)
  int64_t ntiles;  // tiles in the chunk
  int64_t Mt;      // floats per Xt row = nv * L
  int nv;          // token vectors per tile
  float* xt;
  int64_t block_panels;  // panels per block of rows whose Y^T accumulators are kept in scratch
};

// Per-ISA entry points (filled in by spmm_cpu_impl.inc).
struct IsaOps {
  int L;          // lanes
  int nv_max[5];  // max token vectors per tile, indexed by R (1, 2, 4)
  bool (*transpose_x)(const Problem&, const TokenChunk&, int64_t item0, int64_t item1);  // true: non-finite x
  void (*spmm_panels)(const Problem&, const TokenChunk&, int64_t p0, int64_t p1, float* acc);
  // The same with Y^T kept (activated in place) in kept [ntiles][ceil(out / L) * L][Mt]; true: a non-finite value.
  bool (*spmm_panels_kept)(const Problem&, const TokenChunk&, int64_t p0, int64_t p1, float* kept);
  // The GLU of a kept tile in place (rows [o0, o1) <- act(row o) * row (n + o)); true: a non-finite value.
  bool (*glu_kept)(float* kept, int64_t Mt, int64_t n, int act, int64_t o0, int64_t o1);
  void (*gemv_panels)(const Problem&, int64_t p0, int64_t p1, float* acc);
  bool (*any_nonfinite)(const float* x, int64_t n);
  bool (*non_decreasing)(const int32_t* p, int64_t n);
  uint8_t (*max_u8)(const uint8_t* c, int64_t n);
};

// Columns per transpose work item.
constexpr int64_t kTransposeSegment = 256;


}  // namespace

// ==================================================================================================
// Kernel instantiations, one namespace per ISA.
// ==================================================================================================
namespace {
#define SK_NS isa_scalar
#define SK_TARGET
#define SK_VEC VecScalar
#include "spmm_cpu_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#if SK_X86
#define SK_NS isa_avx2
#define SK_TARGET SK_AVX2_TARGET
#define SK_VEC VecAvx2
#include "spmm_cpu_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#define SK_NS isa_avx512
#define SK_TARGET SK_AVX512_TARGET
#define SK_VEC VecAvx512
#include "spmm_cpu_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC
#endif

const IsaOps& ops_for(Isa isa) {
#if SK_X86
  if (isa == Isa::kAvx512) return isa_avx512::kOps;
  if (isa == Isa::kAvx2) return isa_avx2::kOps;
#endif
  return isa_scalar::kOps;
}

// ==================================================================================================
// Driver
// ==================================================================================================

// Tuning constants, measured on a 2-core AVX-512 Xeon (2 MB L2 per core) at BERT-base shapes.
constexpr int64_t kGemvMaxTokens = 2;           // R == 1 and M <= this: gather GEMV kernel
constexpr int64_t kPanelOverhead = 32;          // per-panel cost, in stored entries, for load balancing
constexpr int64_t kMinWorkPerThread = 1 << 14;  // lane-FMAs; below this a call runs on fewer threads
constexpr int64_t kL1Budget = 64 << 10;         // bytes of one column chunk of Xt (about L1 size)
constexpr int64_t kAccBudget = 256 << 10;       // bytes of Y^T accumulators per block of rows
thread_local Scratch tl_xt;   // transposed activations of one token tile (each worker thread)
thread_local Scratch tl_acc;  // Y^T accumulators (each worker thread)
thread_local Scratch tl_ffn;  // grouped_ffn's intermediate, shared by the workers of one call (calling thread)

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool isa_supported(Isa isa) {
  if (isa == Isa::kScalar) return true;
#if SK_X86
  __builtin_cpu_init();  // libgcc also checks that the OS saves the AVX / AVX-512 state (XCR0)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == Isa::kAvx2) return avx2;
  if (isa == Isa::kAvx512) {
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
#endif
  return false;
}

Isa best_isa() {
  static const Isa best = isa_supported(Isa::kAvx512) ? Isa::kAvx512
                          : isa_supported(Isa::kAvx2) ? Isa::kAvx2
                                                      : Isa::kScalar;
  return best;
}

namespace {

// The exact value of output (m, r) under the semantics of spmm_cpu.h: bias plus the products of the stored
// non-zero weights of row r with x[m, :], zero weights skipped. Scalar; only for outputs the kernels made
// non-finite on a token whose x holds a NaN / inf (there 0 * inf or 0 * NaN may have entered the sum).
float exact_output(const Problem& p, int64_t m, int64_t r) {
  const GroupedWeight& w = p.w;
  const int64_t g = r / w.rows, i = r % w.rows;
  const float* xm = p.x + m * p.ldx;
  float s = p.bias != nullptr ? p.bias[r] : 0.0f;
  for (int64_t j = 0; j < w.nchunks; ++j) {
    const int64_t k = j * w.ngroups + g;
    for (int64_t e = w.ptr[k]; e < w.ptr[k + 1]; ++e) {
      const float v = w.val[e * w.rows + i];
      if (v != 0.0f) s += v * xm[j * w.chunk + w.col[e]];
    }
  }
  return s;
}

// Re-computes, with exact_output, the non-finite outputs of the tokens whose x holds a NaN / inf.
void fix_nonfinite_tokens(const Problem& p, const IsaOps& ops, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) {
    if (!ops.any_nonfinite(p.x + m * p.ldx, p.w.in)) continue;
    float* ym = p.y + m * p.ldy;
    for (int64_t r = 0; r < p.w.out; ++r) {
      if (!std::isfinite(ym[r])) ym[r] = apply_epilogue(exact_output(p, m, r), p.ep, m, r);
    }
  }
}

// Entries at which the index scan splits its work between threads; smaller weights are scanned serially
// (a parallel region costs more than scanning this many bytes).
constexpr int64_t kValidateGrain = 1 << 17;

}  // namespace

void validate_weight(const GroupedWeight& w, int64_t nent, Isa isa) {
  TORCH_CHECK_VALUE(isa_supported(isa), "sparsekit: ISA ", isa_name(isa), " is not supported by this CPU");
  TORCH_CHECK_VALUE(w.rows == 1 || w.rows == 2 || w.rows == 4, "sparsekit: group_rows must be 1, 2 or 4, got ",
                    w.rows);
  TORCH_CHECK_VALUE(w.chunk >= 1 && w.chunk <= 256, "sparsekit: chunk must be in [1, 256], got ", w.chunk);
  TORCH_CHECK_VALUE(w.in >= 0 && w.out >= 0 && w.in <= INT32_MAX && w.out <= INT32_MAX,
                    "sparsekit: in_features / out_features must be in [0, 2**31-1], got ", w.in, " / ", w.out);
  TORCH_CHECK_VALUE(w.ngroups == (w.out + w.rows - 1) / w.rows && w.nchunks == (w.in + w.chunk - 1) / w.chunk,
                    "sparsekit: ngroups / nchunks do not match out / in");
  TORCH_CHECK_VALUE(nent >= 0 && nent <= INT32_MAX, "sparsekit: ", nent,
                    " stored entries do not fit the int32 ptr (at most 2**31-1)");
  const int64_t nruns = w.nchunks * w.ngroups;  // < 2**62: no overflow
  const int32_t* pp = w.ptr;
  TORCH_CHECK_VALUE(pp[0] == 0, "sparsekit: ptr[0] must be 0, got ", pp[0]);
  TORCH_CHECK_VALUE(pp[nruns] == nent, "sparsekit: ptr[-1] must equal the number of entries len(col) = ", nent,
                    ", got ", pp[nruns]);
  if (nent == 0 && nruns == 0) return;
  const IsaOps& ops = ops_for(isa);
  // Entries [0, split) lie in chunks 0 .. nchunks-2 (offsets < chunk), [split, nent) in the last chunk
  // (offsets < last_width, so that j * chunk + offset < in). Exact once ptr is non-decreasing; clamped so
  // that the scan stays inside col whatever ptr holds (a decreasing ptr is reported first anyway).
  const int64_t split = nruns == 0 ? nent
                                   : std::clamp<int64_t>(pp[(w.nchunks - 1) * w.ngroups], int64_t{0}, nent);
  const int64_t last_width = w.in - (w.nchunks - 1) * w.chunk;  // 1 .. chunk
  const int64_t nparts = worker_threads(nent + nruns, kValidateGrain);
  std::vector<char> ptr_ok(nparts, 1);
  std::vector<uint8_t> max_inner(nparts, 0), max_last(nparts, 0);
  auto scan = [&](int64_t t) {
    const int64_t k0 = nruns * t / nparts, k1 = nruns * (t + 1) / nparts;  // compares ptr[k0 .. k1]
    ptr_ok[t] = ops.non_decreasing(pp + k0, k1 - k0 + 1);
    const int64_t e0 = nent * t / nparts, e1 = nent * (t + 1) / nparts;
    const int64_t s = std::clamp(split, e0, e1);
    max_inner[t] = ops.max_u8(w.col + e0, s - e0);
    max_last[t] = ops.max_u8(w.col + s, e1 - s);
  };
  if (nparts == 1) {
    scan(0);
  } else {
    at::parallel_for(0, nparts, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) scan(t);
    });
  }
  for (int64_t t = 0; t < nparts; ++t) {
    if (ptr_ok[t]) continue;
    for (int64_t k = 0; k < nruns; ++k) {
      TORCH_CHECK_VALUE(pp[k + 1] >= pp[k], "sparsekit: ptr must be non-decreasing, got ptr[", k, "] = ", pp[k],
                        " > ptr[", k + 1, "] = ", pp[k + 1]);
    }
  }
  const int64_t inner_limit = w.nchunks > 1 ? w.chunk : 256;  // no inner entries when nchunks <= 1
  for (int64_t t = 0; t < nparts; ++t) {
    if (max_inner[t] < inner_limit && max_last[t] < last_width) continue;
    for (int64_t e = 0; e < nent; ++e) {
      const int64_t limit = e < split ? w.chunk : last_width;
      if (w.col[e] < limit) continue;
      // chunk of entry e: the run k with ptr[k] <= e < ptr[k + 1] (ptr is non-decreasing here)
      const int64_t k = std::upper_bound(pp, pp + nruns + 1, static_cast<int32_t>(e)) - pp - 1;
      const int64_t j = k / w.ngroups;
      TORCH_CHECK_VALUE(false, "sparsekit: column index out of range: entry ", e, " (chunk ", j, ", row group ",
                        k % w.ngroups, ") has offset col = ", static_cast<int>(w.col[e]), ", i.e. column ",
                        j * w.chunk + w.col[e], "; chunk ", j, " holds columns ", j * w.chunk, " .. ",
                        std::min(w.in, (j + 1) * w.chunk) - 1, " of in_features = ", w.in);
    }
  }
}

float apply_epilogue(float v, const Epilogue& ep, int64_t m, int64_t o) {
  switch (ep.act) {
    case Activation::kGelu:
      v = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
      break;
    case Activation::kGeluTanh:
      v = 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
      break;
    case Activation::kRelu:
      v = v > 0.0f || std::isnan(v) ? v : 0.0f;
      break;
    default:
      break;
  }
  return ep.residual != nullptr ? v + ep.residual[m * ep.ldr + o] : v;
}

namespace {

// The checks every call makes before any kernel runs (the bindings have validated the weight itself).
const IsaOps& checked_call(const GroupedWeight& w, Isa isa, const Epilogue& epilogue) {
  TORCH_CHECK(static_cast<int>(epilogue.act) >= 0 && static_cast<int>(epilogue.act) <= 3,
              "sparsekit spmm_cpu: unknown activation ", static_cast<int>(epilogue.act));
  TORCH_CHECK(isa_supported(isa), "sparsekit spmm_cpu: ISA ", isa_name(isa), " is not supported by this CPU");
  TORCH_CHECK(w.rows == 1 || w.rows == 2 || w.rows == 4, "sparsekit spmm_cpu: group rows must be 1, 2 or 4");
  TORCH_CHECK(w.chunk >= 1 && w.chunk <= 256, "sparsekit spmm_cpu: column chunk must be in [1, 256]");
  return ops_for(isa);
}

// Cost of each row panel of L rows (entries * R + overhead), for load balancing: prefix sums over the panels.
std::vector<int64_t> panel_prefix(const GroupedWeight& w, int64_t L) {
  const int64_t R = w.rows, GP = L / R, ng = w.ngroups;
  const int64_t npanels = (w.out + L - 1) / L;
  std::vector<int64_t> prefix(npanels + 1, 0);
  for (int64_t pn = 0; pn < npanels; ++pn) prefix[pn + 1] = kPanelOverhead;
  for (int64_t j = 0; j < w.nchunks; ++j) {
    const int32_t* cp = w.ptr + j * ng;
    for (int64_t pn = 0; pn < npanels; ++pn) {
      const int64_t g0 = pn * GP;
      const int64_t g1 = std::min(g0 + GP, ng);
      prefix[pn + 1] += R * (static_cast<int64_t>(cp[g1]) - cp[g0]);
    }
  }
  for (int64_t pn = 0; pn < npanels; ++pn) prefix[pn + 1] += prefix[pn];
  return prefix;
}

// Largest token vectors per tile for a weight: the ISA's register budget for its R, and a column chunk of the
// tile's Xt (chunk x Mt floats) near L1.
int64_t nv_limit(const IsaOps& ops, const GroupedWeight& w) {
  const int64_t nv_l1 = std::max<int64_t>(1, kL1Budget / (w.chunk * ops.L * static_cast<int64_t>(sizeof(float))));
  return std::min<int64_t>(ops.nv_max[w.rows], nv_l1);
}

// How the SpMM path cuts M tokens: tiles of nv vectors (Mt = nv * L tokens), tm token ranges of whole tiles, each
// thread preferably owning whole tiles for all rows (it transposes its own tokens, nothing is shared); with
// fewer tiles than threads the rows are split as well (row_ranges).
struct TilePlan {
  int64_t nv, ntiles, Mt, tm, block_panels;
  int64_t row_ranges(int64_t nthreads, int64_t npanels) const {
    return std::max<int64_t>(1, std::min(nthreads / tm, npanels));
  }
};

TilePlan plan_tiles(int64_t M, int64_t L, int64_t nthreads, int64_t nv_max) {
  const int64_t nvec = (M + L - 1) / L;
  int64_t nv = (nvec + nthreads - 1) / nthreads;                    // enough tiles for every thread ...
  nv = std::min(nv_max, std::max(nv, std::min<int64_t>(nvec, 2)));  // ... but at least 2 vectors per tile
  const int64_t ntiles = (nvec + nv - 1) / nv;
  nv = (nvec + ntiles - 1) / ntiles;  // balance the tiles
  const int64_t Mt = nv * L;
  const int64_t block_panels = std::max<int64_t>(1, kAccBudget / (L * Mt * static_cast<int64_t>(sizeof(float))));
  return {nv, ntiles, Mt, std::min(nthreads, ntiles), block_panels};
}

}  // namespace

void grouped_linear(const float* x, int64_t M, int64_t ldx, const GroupedWeight& w, const float* bias,
                    float* y, int64_t ldy, Isa isa, const Epilogue& epilogue) {
  const IsaOps& ops = checked_call(w, isa, epilogue);
  if (M <= 0 || w.out <= 0) return;
  const Problem p{x, M, ldx, w, bias, y, ldy, epilogue};
  const int64_t L = ops.L;
  const int64_t K = w.in;
  const int64_t npanels = (w.out + L - 1) / L;
  const bool gemv = w.rows == 1 && M <= kGemvMaxTokens;
  const std::vector<int64_t> prefix = panel_prefix(w, L);
  const int64_t lanes = gemv ? M : (M + L - 1) / L * L;
  int64_t nthreads = worker_threads(prefix[npanels] * lanes, kMinWorkPerThread);

  if (gemv) {  // threads own row ranges
    nthreads = std::min(nthreads, npanels);
    const std::vector<int64_t> cut = balanced_cuts(prefix, nthreads);
    std::vector<char> failed(nthreads, 0);
    at::parallel_for(0, nthreads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        float* acc = tl_acc.get(static_cast<size_t>((cut[t + 1] - cut[t]) * L * 2 * L));
        if (acc == nullptr) {
          failed[t] = 1;
          continue;
        }
        ops.gemv_panels(p, cut[t], cut[t + 1], acc);
        tl_acc.trim();
      }
    });
    for (char f : failed) TORCH_CHECK(!f, "sparsekit spmm_cpu: out of memory (scratch buffers)");
    fix_nonfinite_tokens(p, ops, 0, M);  // M <= 2: the scan of x is cheaper than a parallel region
    return;
  }

  // SpMM. Work items are (token range, row range) pairs (plan_tiles); each item transposes its tiles.
  const TilePlan tp = plan_tiles(M, L, nthreads, nv_limit(ops, w));
  const int64_t ntiles = tp.ntiles, Mt = tp.Mt, tm = tp.tm;
  const int64_t tr = tp.row_ranges(nthreads, npanels);
  const std::vector<int64_t> cut = balanced_cuts(prefix, tr);
  const int64_t nseg = (K + kTransposeSegment - 1) / kTransposeSegment;
  std::vector<char> failed(tm * tr, 0);
  std::vector<char> nonfinite(ntiles, 0);  // per tile: x holds a NaN / inf (written by its ir == 0 item only)
  at::parallel_for(0, tm * tr, 1, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t im = item / tr, ir = item % tr;
      float* xt = tl_xt.get(static_cast<size_t>(std::max<int64_t>(K, 1) * Mt));
      float* acc = tl_acc.get(static_cast<size_t>(std::min(cut[ir + 1] - cut[ir], tp.block_panels) * L * Mt));
      if (xt == nullptr || acc == nullptr) {
        failed[item] = 1;
        continue;
      }
      for (int64_t t = im * ntiles / tm; t < (im + 1) * ntiles / tm; ++t) {
        const int64_t m0 = t * Mt;
        const TokenChunk c{m0, std::min(M, m0 + Mt), 1, Mt, static_cast<int>(tp.nv), xt, tp.block_panels};
        const bool bad = ops.transpose_x(p, c, 0, tp.nv * nseg);
        if (ir == 0) nonfinite[t] = bad;
        ops.spmm_panels(p, c, cut[ir], cut[ir + 1], acc);
      }
      tl_xt.trim();
      tl_acc.trim();
    }
  });
  for (char f : failed) TORCH_CHECK(!f, "sparsekit spmm_cpu: out of memory (scratch buffers)");
  for (int64_t t = 0; t < ntiles; ++t) {
    if (nonfinite[t]) fix_nonfinite_tokens(p, ops, t * Mt, std::min(M, (t + 1) * Mt));
  }
}

bool grouped_ffn(const float* x, int64_t M, int64_t ldx, const GroupedWeight& wi, const float* bias_i,
                 Activation act, bool glu, const GroupedWeight& wf, const float* bias_f, float* y, int64_t ldy,
                 Isa isa, const Epilogue& epilogue) {
  const int64_t U = wf.in;  // FFN width: the FFN-out's inputs
  TORCH_CHECK(wi.out == (glu ? 2 * U : U), "sparsekit spmm_cpu: the FFN-in weight must have ", glu ? 2 * U : U,
              " rows for an FFN-out of ", U, " inputs", glu ? " (GLU: FFN-in rows, then gate rows)" : "", ", it has ",
              wi.out);
  Epilogue act_only;
  act_only.act = act;
  const IsaOps& ops = checked_call(wi, isa, act_only);
  checked_call(wf, isa, epilogue);
  if (glu) act_only.act = Activation::kNone;  // GLU: the activation goes on the first half, after both exist
  if (M <= 0 || wf.out <= 0) return true;
  // The GEMV path (few tokens) has no transposed layout to hand over; nor has an FFN without neurons.
  if (U == 0 || ((wi.rows == 1 || wf.rows == 1) && M <= kGemvMaxTokens)) return false;
  const int64_t L = ops.L;
  const int64_t K = wi.in;
  const int64_t npanels_i = (wi.out + L - 1) / L, npanels_f = (wf.out + L - 1) / L;
  const std::vector<int64_t> prefix_i = panel_prefix(wi, L), prefix_f = panel_prefix(wf, L);
  const int64_t lanes = (M + L - 1) / L * L;
  const int64_t nthreads =
      worker_threads(std::max(prefix_i[npanels_i], prefix_f[npanels_f]) * lanes, kMinWorkPerThread);
  // One tiling for both Linears: the FFN-in's kept Y^T tile is the FFN-out's Xt tile.
  const TilePlan tp = plan_tiles(M, L, nthreads, std::min(nv_limit(ops, wi), nv_limit(ops, wf)));
  const int64_t ntiles = tp.ntiles, Mt = tp.Mt, tm = tp.tm;
  const int64_t tr_i = tp.row_ranges(nthreads, npanels_i), tr_f = tp.row_ranges(nthreads, npanels_f);
  const std::vector<int64_t> cut_i = balanced_cuts(prefix_i, tr_i), cut_f = balanced_cuts(prefix_f, tr_f);
  const int64_t tile_floats = npanels_i * L * Mt;  // a tile of the kept intermediate, rows padded to panels
  float* kept = tl_ffn.get(static_cast<size_t>(ntiles * tile_floats));
  TORCH_CHECK(kept != nullptr, "sparsekit spmm_cpu: out of memory (FFN intermediate, ", ntiles * tile_floats,
              " floats)");
  const int64_t nseg = (K + kTransposeSegment - 1) / kTransposeSegment;
  auto tile = [&](int64_t t, float* xt) {
    return TokenChunk{t * Mt, std::min(M, (t + 1) * Mt), 1, Mt, static_cast<int>(tp.nv), xt, tp.block_panels};
  };
  auto any = [](const std::vector<char>& v) { return std::find(v.begin(), v.end(), 1) != v.end(); };
  auto declined = []() {
    tl_ffn.trim();
    return false;
  };

  // 1. FFN-in: x -> act(x Wi^T + bi) (GLU: x Wi^T + bi), kept transposed per tile.
  const Problem pi{x, M, ldx, wi, bias_i, nullptr, 0, act_only};
  std::vector<char> failed(tm * std::max(tr_i, tr_f), 0), nonfinite(std::max(tm * tr_i, ntiles * tr_f), 0);
  at::parallel_for(0, tm * tr_i, 1, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t im = item / tr_i, ir = item % tr_i;
      float* xt = tl_xt.get(static_cast<size_t>(std::max<int64_t>(K, 1) * Mt));
      if (xt == nullptr) {
        failed[item] = 1;
        continue;
      }
      for (int64_t t = im * ntiles / tm; t < (im + 1) * ntiles / tm; ++t) {
        const TokenChunk c = tile(t, xt);
        const bool bad_x = ops.transpose_x(pi, c, 0, tp.nv * nseg);
        const bool bad_u = ops.spmm_panels_kept(pi, c, cut_i[ir], cut_i[ir + 1], kept + t * tile_floats);
        nonfinite[item] |= static_cast<char>(bad_x || bad_u);
      }
      tl_xt.trim();
    }
  });
  for (char f : failed) TORCH_CHECK(!f, "sparsekit spmm_cpu: out of memory (scratch buffers)");
  // Any NaN / inf (in x or in the intermediate): the caller runs the unfused Linears, whose per-Linear exact
  // recomputation defines those outputs.
  if (any(nonfinite)) return declined();
  if (glu) {  // 1b. the GLU, per (tile, FFN-out row range's share of the FFN rows): all FFN-in rows exist now
    at::parallel_for(0, ntiles * tr_f, 1, [&](int64_t b, int64_t e) {
      for (int64_t item = b; item < e; ++item) {
        const int64_t t = item / tr_f, part = item % tr_f;
        nonfinite[item] = static_cast<char>(ops.glu_kept(kept + t * tile_floats, Mt, U, static_cast<int>(act),
                                                         U * part / tr_f, U * (part + 1) / tr_f));
      }
    });
    if (any(nonfinite)) return declined();
  }

  // 2. FFN-out: reads each kept tile as its Xt (no transpose), writes y with the epilogue.
  const Problem pf{nullptr, M, U, wf, bias_f, y, ldy, epilogue};
  at::parallel_for(0, tm * tr_f, 1, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t im = item / tr_f, ir = item % tr_f;
      float* acc = tl_acc.get(static_cast<size_t>(std::min(cut_f[ir + 1] - cut_f[ir], tp.block_panels) * L * Mt));
      if (acc == nullptr) {
        failed[item] = 1;
        continue;
      }
      for (int64_t t = im * ntiles / tm; t < (im + 1) * ntiles / tm; ++t) {
        ops.spmm_panels(pf, tile(t, kept + t * tile_floats), cut_f[ir], cut_f[ir + 1], acc);
      }
      tl_acc.trim();
    }
  });
  tl_ffn.trim();
  for (char f : failed) TORCH_CHECK(!f, "sparsekit spmm_cpu: out of memory (scratch buffers)");
  return true;
}

}  // namespace spmm_cpu
}  // namespace sparsekit
