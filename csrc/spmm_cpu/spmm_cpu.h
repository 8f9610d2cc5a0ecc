// sparsekit CPU sparse x dense kernels for Linear layers:  y = x @ W^T + b.
//
// W is sparse [out, in] and pre-packed once (Python: sparsekit.kernels.cpu_layout.pack_cpu_csr / pack_cpu_bsr) into the
// column-blocked "row-group" layout below; x is dense row-major [M, in] (M = tokens), y dense
// row-major [M, out]. All arithmetic is fp32 (bf16 weights are widened at pack time).
//
// Packed layout (R = group rows: 1 for CSR, 1, 2 or 4 for BSR; Kc = column chunk, 1..256):
//   ngroups  = ceil(out / R); group g owns output rows g*R .. g*R+R-1 (rows >= out are zero padding).
//   nchunks  = ceil(in / Kc); chunk j owns input columns j*Kc .. j*Kc+Kc-1.
//   ptr : int32 [nchunks * ngroups + 1], non-decreasing, ptr[0] == 0, ptr[-1] == nent. Entries are
//         stored chunk-major: (chunk j, group g) owns entries e in [ptr[j*ngroups + g], ptr[j*ngroups + g + 1]).
//   col : uint8 [nent]; entry e is column j*Kc + col[e] (< in), strictly increasing within (j, g).
//   val : float32 [nent * R]; val[e*R + i] = W[g*R + i, j*Kc + col[e]] (0 for padding rows).
//   Semantics: y[m, g*R+i] = bias[g*R+i] + sum_j sum_{e in (j, g), val[e*R+i] != 0} val[e*R+i] * x[m, j*Kc + col[e]]
//         -- i.e. x @ W.T + bias where W holds the stored non-zero values and every other weight is absent, not
//         a zero factor: a NaN / inf in x reaches an output only through a stored non-zero weight of its row
//         (explicit zeros stored in a group, e.g. inside a BSR block, do not propagate it; 0 * NaN never
//         enters a sum). Duplicate (column, group) entries add. NaN / inf stored in val or bias propagate.
//   5 bytes per stored weight for CSR (fp32 value + 8-bit in-chunk column) plus 4 bytes per (chunk, group).
//
// Kernels (chosen per call):
//   * SpMM (R > 1, or M > 2 tokens): tokens are cut into tiles of NV vectors of L tokens (L = 16 on AVX-512,
//     8 on AVX2, 16 on the scalar path; NV <= 8, smaller when a column chunk of the tile would not stay
//     near L1). A work item (token tiles x a range of row panels) transposes its tiles of x into a
//     zero-padded, 64-byte-aligned scratch Xt [in][Mt] (Mt = NV * L) and keeps Y^T for a block of its row
//     panels (L rows each) in a second scratch buffer. For each column chunk (its Xt slice, Kc x Mt floats)
//     and each group with entries there, the group's R x NV accumulators are loaded into registers, each
//     stored weight is broadcast and FMA'd against NV contiguous token vectors, and the accumulators are
//     stored back (bias is the initial value). Y^T is then transposed L x L in registers and written to y
//     with one vector store per token. For R == 1 even and odd entries go to two accumulator sets (FMA
//     latency), so the summation order of every output never depends on the tiling or the thread count.
//   * GEMV (R == 1 and M <= 2, e.g. one token): masked vector gathers (8-bit offsets widened to 32-bit
//     indices) over each (chunk, row) run, chunk-major like the storage so the weight is read front to back;
//     both tokens share the index / weight loads; one horizontal sum per row and token at the end.
//   Threads (at::parallel_for, so torch.set_num_threads is honoured, one parallel region per call) own
//   whole token tiles for all rows when there are enough tiles -- nothing is shared between threads --
//   otherwise also ranges of row panels balanced by stored entries (rows are never split, see above).
//
// ISA: AVX-512 (F/BW/VL/DQ), AVX2+FMA and a portable scalar path are compiled in the same translation
// unit (per-function target attributes; the file itself is built for the baseline target of any
// architecture) and chosen at run time from the CPU (cpuid via __builtin_cpu_supports). The caller
// passes the path explicitly; the Python layer picks best_isa() unless SPARSEKIT_ISA=avx512|avx2|scalar
// forces one. grouped_linear refuses (c10::Error) an ISA the CPU does not support.
//
//   Non-finite x: the SpMM transpose notes (one FMA x * 0 per loaded vector) whether a tile of x holds a
//   NaN / inf, the GEMV path scans its 1-2 rows; only then are the non-finite outputs of those tokens
//   recomputed exactly (skipping zero weights), so finite inputs cost nothing extra.
//
// Index safety: the kernels trust the packed indices; validate_weight() checks every index they use and
// runs on every call of the binding (sizes, dtypes, devices are checked there too). It is O(nent + runs):
// one vectorised pass over ptr (ptr[0] == 0, non-decreasing, ptr[-1] == nent) and one over col (max offset
// < Kc in chunks 0..nchunks-2, < in - (nchunks-1)*Kc in the last chunk, whose entries are the tail
// [ptr[(nchunks-1)*ngroups], nent) of col), split between threads for large weights. Nothing else is
// needed for memory safety: val is read at e*R+i for the entries e < nent, x at columns < in. (Tensors that
// another thread modifies in place while a call runs are a data race the check cannot cover.)
#pragma once

#include <cstdint>

namespace sparsekit {
namespace spmm_cpu {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

/// Name of an ISA path: "scalar", "avx2" or "avx512".
const char* isa_name(Isa isa);

/// Whether this CPU (and this build) can run the given path. kScalar is always supported.
bool isa_supported(Isa isa);

/// The best path this CPU supports.
Isa best_isa();

/// Non-owning view of a packed weight (layout above). Pointers must stay valid during the call.
struct GroupedWeight {
  int64_t out = 0;              ///< output features (rows of W)
  int64_t in = 0;               ///< input features (columns of W)
  int64_t rows = 1;             ///< R, rows per group: 1, 2 or 4
  int64_t ngroups = 0;          ///< ceil(out / R)
  int64_t chunk = 1;            ///< Kc, columns per chunk: 1..256
  int64_t nchunks = 0;          ///< ceil(in / Kc)
  const int32_t* ptr = nullptr; ///< [nchunks * ngroups + 1]
  const uint8_t* col = nullptr; ///< [nent]
  const float* val = nullptr;   ///< [nent * R]
};

/// Checks that every index the kernels use stays in bounds (see "Index safety" above): throws c10::ValueError
/// (Python ValueError) naming the first bad ptr position or entry. nent = len(col); the caller has checked that
/// ptr holds nchunks * ngroups + 1 and val nent * rows elements.
void validate_weight(const GroupedWeight& w, int64_t nent, Isa isa);

/// Element-wise activations of the fused epilogue (the values are part of the ops' interface).
enum class Activation : int { kNone = 0, kGelu = 1, kGeluTanh = 2, kRelu = 3 };

/// What the kernel does to each output value v = (x @ W^T + bias)[m, o] before storing it, in registers:
///   y[m, o] = act(v) + residual[m * ldr + o]   (no residual: nullptr).
/// GELU is the erf form (BERT's "gelu"; vec_math.inc: |error| about 1e-6 in the GELU), kGeluTanh the tanh form.
struct Epilogue {
  Activation act = Activation::kNone;
  const float* residual = nullptr;  ///< float32, row stride ldr (>= out), M rows, or nullptr
  int64_t ldr = 0;
};

/// y[m, :] = epilogue(x[m, :] @ W^T + bias)  for m in [0, M), for a weight that passed validate_weight.
///   x    : float32, row stride ldx (>= in), M rows.
///   bias : float32 [out] or nullptr.
///   y    : float32, row stride ldy (>= out), M rows; columns [0, out) are fully overwritten. y must not
///          overlap x or the residual.
/// Runs on up to at::get_num_threads() threads. Throws c10::Error on an unsupported ISA or bad sizes.
void grouped_linear(const float* x, int64_t M, int64_t ldx, const GroupedWeight& w, const float* bias,
                    float* y, int64_t ldy, Isa isa, const Epilogue& epilogue = Epilogue());

/// An FFN without a row-major intermediate:  y[m, :] = epilogue(h[m, :] @ Wf^T + bias_f), with
///   h = act(x @ Wi^T + bias_i)                      or, with glu (Wi stacks the FFN-in rows on the gate rows),
///   h[m, o] = act(a[m, o]) * a[m, U + o],  a = x @ Wi^T + bias_i   (U = wf.in, o < U),
/// bit for bit what the unfused Linears return (grouped_linear with the activation as its epilogue, or without it
/// then encoder_cpu::glu_rows; then grouped_linear with `epilogue`). The SpMM path keeps the FFN-in's Y^T tile,
/// activated in place, and hands it to the FFN-out kernel as its transposed activations: the intermediate is never
/// transposed back and forth. Returns false, with y not written, when it cannot take that path -- the GEMV path of
/// <= 2 tokens, an FFN without neurons, a NaN / inf in x or in the intermediate (the per-Linear exact recomputation
/// above defines those outputs) --, and the caller then runs the unfused Linears.
///   x : float32 [M, wi.in] (row stride ldx); wi.out must be wf.in (2 wf.in with glu); y : float32 [M, wf.out]
///   (stride ldy), not overlapping x or the residual; bias_i / bias_f: [wi.out] / [wf.out] or nullptr.
bool grouped_ffn(const float* x, int64_t M, int64_t ldx, const GroupedWeight& wi, const float* bias_i,
                 Activation act, bool glu, const GroupedWeight& wf, const float* bias_f, float* y, int64_t ldy,
                 Isa isa, const Epilogue& epilogue = Epilogue());

/// The epilogue of one value, scalar (std::erf / std::tanh): act(v) + residual[m * ldr + o].
float apply_epilogue(float v, const Epilogue& epilogue, int64_t m, int64_t o);

}  // namespace spmm_cpu
}  // namespace sparsekit
