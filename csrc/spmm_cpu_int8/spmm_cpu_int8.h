// sparsekit CPU INT8 sparse x dense kernels for Linear layers:  y = x @ W^T + b, with W quantised to int8.
//
// W [out, in] is quantised once, symmetrically per output row (Python: sparsekit.kernels.cpu_int8.pack_cpu_int8_b4):
//   W[o, i] ~ scale[o] * q[o, i],  q int8 in [-127, 127] (never -128), scale fp32 >= 0.
// and stored sparse in 1x4 blocks along the input dimension. x is dense fp32 row-major [M, in] (M = tokens),
// quantised dynamically per token inside the op; the products accumulate in int32; y is fp32 [M, out].
//
// Packed layout ("b4": row-wise CSR over 1x4 blocks):
//   nkb  = ceil(in / 4) block columns; block column b covers input columns 4b .. 4b+3 (columns >= in are zero
//          padding, their q must be 0).
//   ptr   : int32 [out + 1], ptr[0] == 0, non-decreasing, ptr[out] == nblk; row o owns blocks [ptr[o], ptr[o+1]).
//   col   : int16 [nblk]; block e is block column col[e], in [0, nkb) (in <= kMaxInFeatures, so nkb <= 32768).
//   val   : int8 [nblk * 4]; val[4e + k] = q[o, 4 * col[e] + k]. A block is stored when any of its four fp32
//           weights is non-zero; zeros inside a stored block are explicit zeros.
//   scale : fp32 [out].
//   wsum  : int32 [out], wsum[o] = sum of row o's values (|wsum| <= 127 * 4 * nkb < 2**31): the offset
//           compensation of the offset paths below, computed once at pack time like oneDNN's s8s8 weight
//           reorders do (per call it cost a pass over every row's values on every thread).
//   5 bytes per stored weight group of 4 (one 32-bit word of values + a 16-bit column) plus 8 bytes per row.
//
// Quantisation of x (every ISA path, bit for bit the same; reference: sparsekit.kernels.reference.quantize_tokens):
//   a[m] = max_i |x[m, i]|, s[m] = a[m] / 127, inv[m] = 127 / a[m] (fp32 divisions),
//   xq[m, i] = clamp(round_half_even(x[m, i] * inv[m]), -127, 127) (fp32 multiply: one division per token, not
//   per element). A token whose inv[m] is not finite (all zeros, or a[m] < 127 / FLT_MAX) has xq = 0: its outputs
//   are bias. A token holding a NaN / inf has s[m] = NaN and xq = 0: all its outputs are NaN.
// Accumulation (exact, int32): acc[m, o] = sum over the stored blocks e of row o, k < 4, of
//   xq[m, 4 col[e] + k] * val[4e + k]. |acc| <= in * 127 * 127 < 2**31 because in <= kMaxInFeatures.
// Output: y[m, o] = float(acc[m, o]) * (s[m] * scale[o]) + bias[o]   (one fp32 multiply, then one FMA).
//
// Kernel: tokens in tiles of Mt = NV * L (L = int32 lanes: 16 on the 512-bit paths, 8 on the 256-bit ones, 16 on the
// scalar path; NV = 4 token vectors, 8 on AVX2: Mt = 64 everywhere but AVX-VNNI's 32). A work item (a range of tiles x
// a range of row panels of L rows) quantises its tokens into a scratch buffer Xq [Tc / Mt][nkb][Mt][4] (the 4 features
// of a block column of one token are one 32-bit word, the operand of the byte dot-product instructions; Tc tokens, up
// to 4 tiles at a time, each tile contiguous; L tokens are quantised into rows and transposed L x L words in registers,
// so each store writes a whole vector). For each panel and tile it runs each row: per stored block, the row's 4 weights
// are broadcast as one 32-bit word and multiplied-added against up to NV vectors of L tokens (two accumulator sets,
// even / odd blocks, on the vpdpbusd paths, whose accumulator latency is loop-carried), so the weights are read once
// per tile and the activations of a tile stay in L1 / L2. The int32 accumulators of a group of 64 rows (Y^T, 64 rows x
// Mt tokens) are transposed L x L in registers and handed, one token at a time with lanes over L consecutive outputs
// and the group's panels left to right (so each token's 256 bytes of y are written in one stream), to the epilogue:
// the store step is a template functor (DequantBias computes the fp32 output above; Int32Acc stores the raw
// accumulators, the debug / test entry). A caller's fp32 epilogue (GELU, a residual add) runs through Output::post on
// each block right after it is stored.
//
// ISA paths (chosen at run time; all compiled into one translation unit built for the baseline target, the
// SIMD code enabled per function with target attributes, CPU checked with __builtin_cpu_supports):
//   * avx512-vnni (AVX-512 F/BW/VL/DQ + VNNI): vpdpbusd on 16 tokens; vpdpbusd multiplies UNSIGNED bytes by
//     signed bytes, so x is stored offset, u = xq + 128 in [1, 255], and the kernel subtracts
//     128 * wsum[o] (the row's weight sum, stored with the packed weight) -- exact in int32 (wrap-around
//     arithmetic, and the true result fits).
//   * avx-vnni (AVX2 + AVX-VNNI, VEX vpdpbusd, e.g. Alder Lake and later, Zen 5): the same on 8 tokens.
//   * avx512bw: vpmaddubsw + vpmaddwd on 16 tokens; avx2: vpmaddubsw + vpmaddwd on 8 tokens.
//     vpmaddubsw saturates the int16 sum of two u8 x s8 products, which the offset scheme would overflow
//     (255 * 127 * 2 > 32767). These paths use the sign trick instead: the unsigned operand is |w| (the
//     broadcast weight word, u8 <= 127, computed once per block), the signed one is xq with the sign of w moved
//     onto it (vpsignb on AVX2; a masked byte negation under the mask of w < 0 on AVX-512BW), so each pair sum
//     is at most 2 * 127 * 127 = 32258: never saturates, results EXACT, with the same full 8-bit activation
//     quantisation as every other path (no accuracy cost; one extra operation per block and vector, and Xq
//     holds xq itself). This is why q = -128 is forbidden (and xq is clamped to -127).
//   * avx2 / avx512bw with narrow weights: when every weight value of the call is within +-kNarrowWeightMax (63:
//     7-bit weights, e.g. packed with weight_bits=7), vpmaddubsw runs straight on u = xq + 128 (u8) and q (s8): each
//     pair sum is at most 2 * 255 * 63 = 32130 < 32767, never saturates, EXACT, with the offset compensation of the
//     vpdpbusd paths. No vpsignb / vpabsb: one multiply-pipe instruction fewer per block and token vector (the
//     inner loop's bound on AVX2 without VNNI; oneDNN halves its weights on such CPUs for the same reason). The
//     binding picks it from the weight's largest |q|, which validate_weight records, so it is the same path name.
//   * scalar: plain int32 loops (any CPU, any compiler).
// Every path produces int32 accumulators bit-identical to the integer reference. The caller passes the path
// explicitly; the Python layer picks best_isa() unless SPARSEKIT_INT8_ISA forces one. Unsupported paths raise.
//
// Index safety: validate_weight() runs on every call of the binding and checks every index the kernels use:
// ptr[0] == 0, ptr non-decreasing, ptr[out] == nblk, every col in [0, nkb); it also checks that no value is
// -128 (the sign trick above needs |q| <= 127) and records the largest |q| (which picks the narrow-weight kernels).
// wsum only enters the results (never an address); validate_weight checks that its total equals the total of val,
// which catches values changed after packing without a new wsum (not values moved between rows: re-pack after
// editing a packed weight). O(nblk), vectorised. Sizes, dtypes and devices are checked by
// the binding. (Tensors another thread modifies in place during a call are a data race no check can cover.)
#pragma once

#include <cstdint>

namespace sparsekit {
namespace spmm_cpu_int8 {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512Bw = 2, kAvxVnni = 3, kAvx512Vnni = 4 };

/// Largest in_features: keeps |acc| < 2**31 and block columns in an int16.
constexpr int64_t kMaxInFeatures = 131072;

/// Largest |q| of the narrow-weight kernels of the vpmaddubsw paths (see "ISA paths").
constexpr int kNarrowWeightMax = 63;

/// Name of a path: "avx512-vnni", "avx-vnni", "avx512bw", "avx2" or "scalar".
const char* isa_name(Isa isa);

/// Whether this CPU (and this build) can run the path. kScalar is always supported.
bool isa_supported(Isa isa);

/// Whether this build compiled the path (the SIMD paths need an x86 GCC / Clang build).
bool isa_compiled(Isa isa);

/// The best path this CPU supports (order: avx512-vnni, avx-vnni, avx512bw, avx2, scalar).
Isa best_isa();

/// Non-owning view of a packed weight (layout above). Pointers must stay valid during the call.
struct B4Weight {
  int64_t out = 0;                ///< output features (rows of W)
  int64_t in = 0;                 ///< input features (columns of W), <= kMaxInFeatures
  int64_t nkb = 0;                ///< ceil(in / 4)
  int64_t nblk = 0;               ///< stored blocks
  const int32_t* ptr = nullptr;   ///< [out + 1]
  const int16_t* col = nullptr;   ///< [nblk]
  const int8_t* val = nullptr;    ///< [nblk * 4]
  const float* scale = nullptr;   ///< [out]
  const int32_t* wsum = nullptr;  ///< [out] row sums of val
  int max_abs = 127;              ///< largest |val[i]|, recorded by validate_weight (the narrow kernels need <= 63)
};

/// Throws c10::ValueError (Python ValueError) naming the first bad ptr position, column or value, or a wsum
/// whose total differs from val's (see "Index safety"); else sets w.max_abs. The caller has checked the sizes of
/// the arrays.
void validate_weight(B4Weight& w, Isa isa);

/// Where the results go. kDequantBias: y float32 [M, out] (row stride ldy) = the output above, bias [out] or
/// nullptr. kInt32: acc int32 [M, out] (row stride ldy) = the raw accumulators. x_scale, if not nullptr,
/// receives s[m] (float32 [M]).
/// post (kDequantBias only, optional): called on the worker thread that wrote it for every block of y it has just
/// finished -- rows [m0, m1), columns [o0, o0 + n), n <= 16 -- while the block is still in L1: the place for the
/// caller's fp32 epilogue (an activation, a residual add), which would otherwise be one more pass over y in
/// memory. It must only touch that block (blocks of different calls run concurrently) and must not throw.
struct Output {
  enum class Kind : int { kDequantBias = 0, kInt32 = 1 };
  Kind kind = Kind::kDequantBias;
  float* y = nullptr;
  int32_t* acc = nullptr;
  int64_t ldy = 0;
  const float* bias = nullptr;
  float* x_scale = nullptr;
  void (*post)(void* ctx, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t o0, int64_t n) = nullptr;
  void* post_ctx = nullptr;
};

/// Runs the op for x (float32, M rows, row stride ldx >= in) and a weight that passed validate_weight, on up
/// to at::get_num_threads() threads. Throws c10::Error on an unsupported ISA or when scratch memory runs out.
void b4_linear(const float* x, int64_t M, int64_t ldx, const B4Weight& w, const Output& out, Isa isa);

}  // namespace spmm_cpu_int8
}  // namespace sparsekit
