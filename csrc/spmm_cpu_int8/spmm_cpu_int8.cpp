// sparsekit CPU INT8 sparse Linear kernels: vector back-ends, ISA dispatch and the threaded driver.
// The kernel bodies live in spmm_cpu_int8_impl.inc (compiled once per ISA); see spmm_cpu_int8.h for the layout,
// the quantisation and the per-ISA arithmetic.
//
// This file must be compiled for the baseline target (no -march=native, no -mavx*): the SIMD code is enabled
// per function with target attributes and only run after a CPU check.
#include "spmm_cpu_int8.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "isa_macros.h"
#include "scratch.h"
#include "work_split.h"

// AVX-VNNI (VEX vpdpbusd) needs GCC >= 11 / Clang >= 12.
#if SK_X86 && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define SK_HAVE_AVXVNNI 1
#else
#define SK_HAVE_AVXVNNI 0
#endif

namespace sparsekit {
namespace spmm_cpu_int8 {
namespace {

// How a path multiplies bytes (see spmm_cpu_int8.h, "ISA paths"); decides what the activation scratch holds.
enum class Mode : int {
  kSigned = 0,  // scalar: xq (int8)
  kSign = 1,    // vpmaddubsw paths: xq (int8); the sign of each weight byte is moved onto it
  kOffset = 2,  // vpdpbusd paths: xq + 128 (u8)
};

// One call's operands.
struct Problem {
  const float* x;
  int64_t M;
  int64_t ldx;
  B4Weight w;
  Output out;
};

// One work item: tokens [m0, m1) x output rows [r0, r1) (r0 a multiple of L), and its scratch memory.
struct Item {
  int64_t m0, m1, r0, r1;
  bool write_scale;   // this item writes Output::x_scale for its tokens (one item per token range does)
  uint8_t* xa;        // activation buffer [Tc / Mt][nkb][Mt][4] of the offset paths: xq + 128 (u8)
  int8_t* xs;         // the same buffer for the other paths: xq (int8)
  float* tscale;      // [Tc] per-token scales
  int8_t* qrow;       // [L][4 * nkbp] L quantised tokens (nkbp = nkb rounded up to L)
  int32_t* yt;        // [kGroupRows][Mt] accumulators of a group of row panels
  int64_t Tc;         // tokens per chunk (a multiple of Mt)
};

// Per-ISA entry points (filled in by spmm_cpu_int8_impl.inc).
struct IsaOps {
  int L;       // int32 lanes per vector (tokens per vector, rows per panel)
  int Mt;      // tokens per tile
  Mode mode;
  void (*run_dequant)(const Problem&, const Item&);
  void (*run_int32)(const Problem&, const Item&);
  bool (*non_decreasing)(const int32_t* p, int64_t n);
  bool (*col_in_range)(const int16_t* c, int64_t n, int64_t nkb);
  int (*scan_values)(const int8_t* v, int64_t n, int64_t* sum);  // largest |v[i]| (128 for -128, 0 when n == 0)
                                                                  // and the sum of the values
};

// Tiles per token chunk (the activations quantised at once by a work item).
constexpr int64_t kChunkTiles = 4;
// Output rows whose accumulators a tile collects before writing them to y (a multiple of every L; 64 rows x 64
// tokens of int32 = 16 KB, half of L1).
constexpr int64_t kGroupRows = 64;

// ==================================================================================================
// Vector back-ends: L int32 lanes, L fp32 lanes, and the byte dot product of one 32-bit weight word.
// ==================================================================================================

// Portable fallback: plain loops over 16 lanes.
struct I8Scalar {
  static constexpr int L = 16;
  static constexpr int kNv = 4;
  static constexpr bool kTwoSets = false;
  static constexpr Mode kMode = Mode::kSigned;
  struct ireg {
    int32_t v[L];
  };
  struct freg {
    float v[L];
  };
  using wreg = uint32_t;
  static SK_INLINE ireg izero() {
    ireg r;
    for (int i = 0; i < L; ++i) r.v[i] = 0;
    return r;
  }
  static SK_INLINE ireg iadd(const ireg& a, const ireg& b) {
    ireg r;
    for (int i = 0; i < L; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
  static SK_INLINE ireg isub_scalar(const ireg& a, int32_t b) {
    ireg r;
    for (int i = 0; i < L; ++i) r.v[i] = static_cast<int32_t>(static_cast<uint32_t>(a.v[i]) - static_cast<uint32_t>(b));
    return r;
  }
  static SK_INLINE ireg iload(const int32_t* p) {
    ireg r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static SK_INLINE void istore(int32_t* p, const ireg& a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static SK_INLINE void istore_partial(int32_t* p, const ireg& a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static SK_INLINE wreg bcast(uint32_t w) { return w; }
  // Per byte: b + 128 as u8 (b ^ 0x80).
  static SK_INLINE ireg offset_bytes(const ireg& a) {
    ireg r;
    for (int i = 0; i < L; ++i) r.v[i] = static_cast<int32_t>(static_cast<uint32_t>(a.v[i]) ^ 0x80808080u);
    return r;
  }
  // acc[t] += sum_k xq[t][k] * w[k] over the L tokens t of one block column (4 bytes per token).
  static SK_INLINE ireg dot(const ireg& acc, wreg w, const uint8_t*, const int8_t* ps) {
    int8_t wb[4];
    std::memcpy(wb, &w, 4);
    ireg r;
    for (int i = 0; i < L; ++i) {
      const int8_t* x = ps + 4 * i;
      r.v[i] = acc.v[i] + x[0] * wb[0] + x[1] * wb[1] + x[2] * wb[2] + x[3] * wb[3];
    }
    return r;
  }
  static SK_INLINE void itranspose(ireg* r) {
    for (int i = 0; i < L; ++i)
      for (int j = i + 1; j < L; ++j) std::swap(r[i].v[j], r[j].v[i]);
  }
  // sum over i < n of (v[i] ^ 0x80), i.e. of the bytes offset to [0, 255]. Eight bytes at a time in a 64-bit word:
  // pairs summed into four 16-bit lanes (at most 2 * 255 per step, so up to 128 steps fit), added up every 128 steps.
  static SK_INLINE int64_t offset_byte_sum(const uint8_t* v, int64_t n) {
    constexpr uint64_t kFlip = 0x8080808080808080ull, kLow = 0x00FF00FF00FF00FFull, k16 = 0xFFFFull;
    const int64_t n8 = n / 8 * 8;
    int64_t sum = 0, i = 0;
    while (i < n8) {
      uint64_t lanes = 0;
      for (const int64_t end = std::min(n8, i + 8 * 128); i < end; i += 8) {
        uint64_t x;
        std::memcpy(&x, v + i, 8);
        x ^= kFlip;
        lanes += (x & kLow) + ((x >> 8) & kLow);
      }
      sum += static_cast<int64_t>((lanes & k16) + ((lanes >> 16) & k16) + ((lanes >> 32) & k16) + (lanes >> 48));
    }
    for (; i < n; ++i) sum += v[i] ^ 0x80u;
    return sum;
  }
  static SK_INLINE freg fzero() { return fset1(0.0f); }
  static SK_INLINE freg fset1(float a) {
    freg r;
    for (int i = 0; i < L; ++i) r.v[i] = a;
    return r;
  }
  static SK_INLINE freg fload(const float* p) {
    freg r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static SK_INLINE ireg as_ireg(const freg& a) {
    ireg r;
    std::memcpy(r.v, a.v, sizeof(r.v));
    return r;
  }
  static SK_INLINE freg as_freg(const ireg& a) {
    freg r;
    std::memcpy(r.v, a.v, sizeof(r.v));
    return r;
  }
  static SK_INLINE freg fload_partial(const float* p, int n) {
    freg r = fzero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static SK_INLINE void fstore_partial(float* p, const freg& a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static SK_INLINE freg fmul(const freg& a, const freg& b) {
    freg r;
    for (int i = 0; i < L; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
  static SK_INLINE freg fmadd(const freg& a, const freg& b, const freg& c) {
    freg r;
    for (int i = 0; i < L; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  static SK_INLINE freg cvt_f(const ireg& a) {
    freg r;
    for (int i = 0; i < L; ++i) r.v[i] = static_cast<float>(a.v[i]);
    return r;
  }
  // max |x| over the n lanes of p; also returns (through nonfinite) whether a lane was NaN / inf.
  static SK_INLINE float absmax(const float* p, int64_t n, bool* nonfinite) {
    float m = 0.0f;
    bool bad = false;
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(p[i]);
      bad |= !(a <= std::numeric_limits<float>::max());
      m = a > m ? a : m;
    }
    *nonfinite = bad;
    return m;
  }
  // q[i] = clamp(round_half_even(x[i] * inv), -127, 127), i < n.
  static SK_INLINE void quantize_row(const float* x, int64_t n, float inv, int8_t* q) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = std::nearbyint(x[i] * inv);  // default rounding mode: to nearest, ties to even
      q[i] = static_cast<int8_t>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r));
    }
  }
};

#if SK_X86
#define SK_AVX512VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#if SK_HAVE_AVXVNNI
#define SK_AVXVNNI_TARGET __attribute__((target("avxvnni,avx2,fma")))
#endif

alignas(64) const int32_t kMaskTable8[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// 256-bit back-end: everything but the byte dot product, shared by AVX2 and AVX-VNNI. Every member is
// always_inline and is only ever inlined into functions carrying the path's target attribute.
#define SK_I8_256_COMMON(TARGET)                                                                              \
  static constexpr int L = 8;                                                                                 \
  using ireg = __m256i;                                                                                       \
  using freg = __m256;                                                                                        \
  static TARGET SK_INLINE __m256i mask(int n) {                                                               \
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable8 + 8 - n));                         \
  }                                                                                                           \
  static TARGET SK_INLINE ireg izero() { return _mm256_setzero_si256(); }                                     \
  static TARGET SK_INLINE ireg iadd(ireg a, ireg b) { return _mm256_add_epi32(a, b); }                        \
  static TARGET SK_INLINE ireg isub_scalar(ireg a, int32_t b) { return _mm256_sub_epi32(a, _mm256_set1_epi32(b)); } \
  static TARGET SK_INLINE ireg iload(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); } \
  static TARGET SK_INLINE void istore(int32_t* p, ireg a) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), a); } \
  static TARGET SK_INLINE void istore_partial(int32_t* p, ireg a, int n) { _mm256_maskstore_epi32(p, mask(n), a); } \
  static TARGET SK_INLINE ireg offset_bytes(ireg a) { return _mm256_xor_si256(a, _mm256_set1_epi8(-128)); }  \
  static TARGET SK_INLINE void itranspose(ireg* ri) {                                                         \
    __m256 r[8];                                                                                              \
    for (int i = 0; i < 8; ++i) r[i] = _mm256_castsi256_ps(ri[i]);                                            \
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);                    \
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);                    \
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);                    \
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);                    \
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);                  \
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);                  \
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);                  \
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);                  \
    ri[0] = _mm256_castps_si256(_mm256_permute2f128_ps(u0, u4, 0x20));                                        \
    ri[1] = _mm256_castps_si256(_mm256_permute2f128_ps(u1, u5, 0x20));                                        \
    ri[2] = _mm256_castps_si256(_mm256_permute2f128_ps(u2, u6, 0x20));                                        \
    ri[3] = _mm256_castps_si256(_mm256_permute2f128_ps(u3, u7, 0x20));                                        \
    ri[4] = _mm256_castps_si256(_mm256_permute2f128_ps(u0, u4, 0x31));                                        \
    ri[5] = _mm256_castps_si256(_mm256_permute2f128_ps(u1, u5, 0x31));                                        \
    ri[6] = _mm256_castps_si256(_mm256_permute2f128_ps(u2, u6, 0x31));                                        \
    ri[7] = _mm256_castps_si256(_mm256_permute2f128_ps(u3, u7, 0x31));                                        \
  }                                                                                                           \
  /* sum over i < n of (v[i] ^ 0x80): vpsadbw adds 8 offset bytes into each 64-bit lane, 32 bytes a step. */  \
  static TARGET SK_INLINE int64_t offset_byte_sum(const uint8_t* v, int64_t n) {                              \
    const __m256i flip = _mm256_set1_epi8(-128), zero = _mm256_setzero_si256();                               \
    __m256i acc = zero;                                                                                       \
    int64_t i = 0;                                                                                            \
    for (; i + 32 <= n; i += 32) {                                                                            \
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i));                          \
      acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(x, flip), zero));                          \
    }                                                                                                         \
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));           \
    int64_t sum = _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);                                             \
    for (; i < n; ++i) sum += v[i] ^ 0x80u;                                                                   \
    return sum;                                                                                               \
  }                                                                                                           \
  static TARGET SK_INLINE freg fzero() { return _mm256_setzero_ps(); }                                        \
  static TARGET SK_INLINE freg fset1(float a) { return _mm256_set1_ps(a); }                                   \
  static TARGET SK_INLINE freg fload(const float* p) { return _mm256_load_ps(p); }                          \
  static TARGET SK_INLINE ireg as_ireg(freg a) { return _mm256_castps_si256(a); }                             \
  static TARGET SK_INLINE freg as_freg(ireg a) { return _mm256_castsi256_ps(a); }                             \
  static TARGET SK_INLINE freg fload_partial(const float* p, int n) {                                         \
    return n == L ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n));                                      \
  }                                                                                                           \
  static TARGET SK_INLINE void fstore_partial(float* p, freg a, int n) {                                      \
    if (n == L) {                                                                                             \
      _mm256_storeu_ps(p, a);                                                                                 \
    } else {                                                                                                  \
      _mm256_maskstore_ps(p, mask(n), a);                                                                     \
    }                                                                                                         \
  }                                                                                                           \
  static TARGET SK_INLINE freg fmul(freg a, freg b) { return _mm256_mul_ps(a, b); }                           \
  static TARGET SK_INLINE freg fmadd(freg a, freg b, freg c) { return _mm256_fmadd_ps(a, b, c); }             \
  static TARGET SK_INLINE freg cvt_f(ireg a) { return _mm256_cvtepi32_ps(a); }                                \
  /* The bit patterns of |p[0 .. L)|: non-negative floats order like their patterns as int32; NaN / inf are the */\
  /* largest.                                                                                                */\
  static TARGET SK_INLINE __m256i magnitude(const float* p) {                                                 \
    return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_set1_epi32(0x7fffffff));\
  }                                                                                                           \
  /* max |x| over the n lanes of p as the integer max of the magnitudes' patterns: four independent maxima, no    */\
  /* loop-carried float latency; nonfinite: a lane was NaN / inf.                                             */\
  static TARGET SK_INLINE float absmax(const float* p, int64_t n, bool* nonfinite) {                          \
    __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;                                           \
    int64_t i = 0;                                                                                            \
    for (; i + 4 * L <= n; i += 4 * L) {                                                                      \
      m0 = _mm256_max_epi32(m0, magnitude(p + i));                                                            \
      m1 = _mm256_max_epi32(m1, magnitude(p + i + L));                                                        \
      m2 = _mm256_max_epi32(m2, magnitude(p + i + 2 * L));                                                    \
      m3 = _mm256_max_epi32(m3, magnitude(p + i + 3 * L));                                                    \
    }                                                                                                         \
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);                                                   \
    for (; i < n; i += L) {                                                                                   \
      const int k = static_cast<int>(std::min<int64_t>(L, n - i));                                            \
      m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_castps_si256(fload_partial(p + i, k)), abs_mask));    \
    }                                                                                                         \
    m0 = _mm256_max_epi32(_mm256_max_epi32(m0, m1), _mm256_max_epi32(m2, m3));                                \
    __m128i s = _mm_max_epi32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));                   \
    s = _mm_max_epi32(s, _mm_shuffle_epi32(s, 0x4E));                                                         \
    s = _mm_max_epi32(s, _mm_shuffle_epi32(s, 0xB1));                                                         \
    const int32_t bits = _mm_cvtsi128_si32(s);                                                                \
    *nonfinite = bits >= 0x7f800000;                                                                          \
    float r;                                                                                                  \
    std::memcpy(&r, &bits, 4);                                                                                \
    return r;                                                                                                 \
  }                                                                                                           \
  /* q[i] = clamp(round_half_even(x[i] * inv), -127, 127), i < n. vcvtps2dq rounds in the current rounding mode */\
  /* (ties to even by default, like the scalar path's nearbyint); |x * inv| <= 127 * (1 + 2 eps), so the        */\
  /* saturating packs never clip and the byte max only guards against -128. 32 values per step, one store.     */\
  static TARGET SK_INLINE void quantize_row(const float* x, int64_t n, float inv, int8_t* q) {                \
    const __m256 vs = _mm256_set1_ps(inv);                                                                    \
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), lo8 = _mm256_set1_epi8(-127);            \
    int64_t i = 0;                                                                                            \
    for (; i + 4 * L <= n; i += 4 * L) {                                                                      \
      const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs));                        \
      const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + L), vs));                    \
      const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 2 * L), vs));                \
      const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 3 * L), vs));                \
      /* packs work per 128-bit lane: dwords a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7, put back in order */  \
      const __m256i q8 = _mm256_permutevar8x32_epi32(                                                         \
          _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d)), order);                     \
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_max_epi8(q8, lo8));                       \
    }                                                                                                         \
    const __m256i hi32 = _mm256_set1_epi32(127), lo32 = _mm256_set1_epi32(-127);                              \
    for (; i < n; i += L) {                                                                                   \
      const int k = static_cast<int>(std::min<int64_t>(L, n - i));                                            \
      const __m256i r32 = _mm256_cvtps_epi32(_mm256_mul_ps(fload_partial(x + i, k), vs));                     \
      const __m256i i32 = _mm256_min_epi32(_mm256_max_epi32(r32, lo32), hi32);                                \
      const __m256i i16 = _mm256_packs_epi32(i32, i32); /* per 128-bit lane: 0..3 0..3 | 4..7 4..7 */         \
      const __m256i i8 = _mm256_packs_epi16(i16, i16);                                                        \
      const uint32_t w0 = static_cast<uint32_t>(_mm256_extract_epi32(i8, 0));                                 \
      const uint32_t w1 = static_cast<uint32_t>(_mm256_extract_epi32(i8, 4));                                 \
      alignas(8) int8_t t[8];                                                                                 \
      std::memcpy(t, &w0, 4);                                                                                 \
      std::memcpy(t + 4, &w1, 4);                                                                             \
      std::memcpy(q + i, t, static_cast<size_t>(k));                                                          \
    }                                                                                                         \
  }

struct I8Avx2 {
  SK_I8_256_COMMON(SK_AVX2_TARGET)
  static constexpr int kNv = 8;  // 64 tokens per tile; one accumulator set (only a vpaddd is loop-carried)
  static constexpr bool kTwoSets = false;
  static constexpr Mode kMode = Mode::kSign;
  struct wreg {
    __m256i abs;  // |w| per byte (u8 <= 127), broadcast
    __m256i sgn;  // w itself, broadcast: vpsignb moves its sign onto xq
  };
  static SK_AVX2_TARGET SK_INLINE wreg bcast(uint32_t w) {
    const __m256i b = _mm256_set1_epi32(static_cast<int32_t>(w));
    return {_mm256_abs_epi8(b), b};
  }
  // acc += |w| * (xq with the sign of w), bytewise: every int16 pair sum <= 2 * 127 * 127, exact.
  static SK_AVX2_TARGET SK_INLINE ireg dot(ireg acc, const wreg& w, const uint8_t*, const int8_t* ps) {
    const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(ps));
    const __m256i p16 = _mm256_maddubs_epi16(w.abs, _mm256_sign_epi8(x, w.sgn));
    const __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    // In place (the accumulator operand tied), as on the vpdpbusd paths: with the intrinsic GCC kept three of the
    // eight accumulators of row_dot's loop on the stack.
    asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p32));
    return acc;
  }
};

// AVX2 for weights in [-kNarrowWeightMax, kNarrowWeightMax]: vpmaddubsw straight on u = xq + 128 (u8) and the
// weight bytes (s8): each int16 pair sum is at most 2 * 255 * 63 = 32130 < 32767, so it never saturates; exact,
// with the offset compensation of the vpdpbusd paths. No vpsignb / vpabsb: one multiply-pipe instruction fewer per
// block and token vector than the sign trick.
struct I8Avx2Narrow {
  SK_I8_256_COMMON(SK_AVX2_TARGET)
  static constexpr int kNv = 8;
  static constexpr bool kTwoSets = false;
  static constexpr Mode kMode = Mode::kOffset;
  using wreg = __m256i;
  static SK_AVX2_TARGET SK_INLINE wreg bcast(uint32_t w) { return _mm256_set1_epi32(static_cast<int32_t>(w)); }
  static SK_AVX2_TARGET SK_INLINE ireg dot(ireg acc, wreg w, const uint8_t* pa, const int8_t*) {
    const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(pa));
    const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1));
    asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(p32));  // in place, as I8Avx2::dot
    return acc;
  }
};

#if SK_HAVE_AVXVNNI
struct I8AvxVnni {
  SK_I8_256_COMMON(SK_AVXVNNI_TARGET)
  static constexpr int kNv = 4;
  static constexpr bool kTwoSets = true;
  static constexpr Mode kMode = Mode::kOffset;
  using wreg = __m256i;
  static SK_AVXVNNI_TARGET SK_INLINE wreg bcast(uint32_t w) { return _mm256_set1_epi32(static_cast<int32_t>(w)); }
  // acc += (xq + 128) * w, 4 products per lane, no saturation (wrap-around int32; fixed by the compensation).
  static SK_AVXVNNI_TARGET SK_INLINE ireg dot(ireg acc, wreg w, const uint8_t* pa, const int8_t*) {
    return _mm256_dpbusd_avx_epi32(acc, _mm256_load_si256(reinterpret_cast<const __m256i*>(pa)), w);
  }
};
#endif

// 512-bit back-end: everything but the byte dot product, shared by AVX-512BW and AVX-512 VNNI.
#define SK_I8_512_COMMON(TARGET)                                                                              \
  static constexpr int L = 16;                                                                                \
  using ireg = __m512i;                                                                                       \
  using freg = __m512;                                                                                        \
  static TARGET SK_INLINE __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }            \
  static TARGET SK_INLINE ireg izero() { return _mm512_setzero_si512(); }                                     \
  static TARGET SK_INLINE ireg iadd(ireg a, ireg b) { return _mm512_add_epi32(a, b); }                        \
  static TARGET SK_INLINE ireg isub_scalar(ireg a, int32_t b) { return _mm512_sub_epi32(a, _mm512_set1_epi32(b)); } \
  static TARGET SK_INLINE ireg iload(const int32_t* p) { return _mm512_load_si512(p); }                       \
  static TARGET SK_INLINE void istore(int32_t* p, ireg a) { _mm512_store_si512(p, a); }                       \
  static TARGET SK_INLINE void istore_partial(int32_t* p, ireg a, int n) { _mm512_mask_storeu_epi32(p, mask(n), a); } \
  static TARGET SK_INLINE ireg offset_bytes(ireg a) { return _mm512_xor_si512(a, _mm512_set1_epi8(-128)); }  \
  static TARGET SK_INLINE void itranspose(ireg* ri) {                                                         \
    __m512 r[16], t[16];                                                                                      \
    for (int i = 0; i < 16; ++i) r[i] = _mm512_castsi512_ps(ri[i]);                                           \
    for (int i = 0; i < 16; i += 2) {                                                                         \
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);                                                              \
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);                                                          \
    }                                                                                                         \
    for (int i = 0; i < 16; i += 4) {                                                                         \
      r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);                                                         \
      r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);                                                     \
      r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);                                                 \
      r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);                                                 \
    }                                                                                                         \
    for (int i = 0; i < 16; i += 8) {                                                                         \
      for (int j = 0; j < 4; ++j) {                                                                           \
        t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);                                        \
        t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);                                    \
      }                                                                                                       \
    }                                                                                                         \
    for (int j = 0; j < 8; ++j) {                                                                             \
      ri[j] = _mm512_castps_si512(_mm512_shuffle_f32x4(t[j], t[j + 8], 0x88));                                \
      ri[j + 8] = _mm512_castps_si512(_mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD));                            \
    }                                                                                                         \
  }                                                                                                           \
  /* As the 256-bit offset_byte_sum, 64 bytes a step. */                                                      \
  static TARGET SK_INLINE int64_t offset_byte_sum(const uint8_t* v, int64_t n) {                              \
    const __m512i flip = _mm512_set1_epi8(-128), zero = _mm512_setzero_si512();                               \
    __m512i acc = zero;                                                                                       \
    int64_t i = 0;                                                                                            \
    for (; i + 64 <= n; i += 64) {                                                                            \
      acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_xor_si512(_mm512_loadu_si512(v + i), flip), zero));  \
    }                                                                                                         \
    int64_t sum = _mm512_reduce_add_epi64(acc);                                                               \
    for (; i < n; ++i) sum += v[i] ^ 0x80u;                                                                   \
    return sum;                                                                                               \
  }                                                                                                           \
  static TARGET SK_INLINE freg fzero() { return _mm512_setzero_ps(); }                                        \
  static TARGET SK_INLINE freg fset1(float a) { return _mm512_set1_ps(a); }                                   \
  static TARGET SK_INLINE freg fload(const float* p) { return _mm512_load_ps(p); }                          \
  static TARGET SK_INLINE ireg as_ireg(freg a) { return _mm512_castps_si512(a); }                             \
  static TARGET SK_INLINE freg as_freg(ireg a) { return _mm512_castsi512_ps(a); }                             \
  static TARGET SK_INLINE freg fload_partial(const float* p, int n) {                                         \
    return n == L ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask(n), p);                                   \
  }                                                                                                           \
  static TARGET SK_INLINE void fstore_partial(float* p, freg a, int n) {                                      \
    if (n == L) {                                                                                             \
      _mm512_storeu_ps(p, a);                                                                                 \
    } else {                                                                                                  \
      _mm512_mask_storeu_ps(p, mask(n), a);                                                                   \
    }                                                                                                         \
  }                                                                                                           \
  static TARGET SK_INLINE freg fmul(freg a, freg b) { return _mm512_mul_ps(a, b); }                           \
  static TARGET SK_INLINE freg fmadd(freg a, freg b, freg c) { return _mm512_fmadd_ps(a, b, c); }             \
  static TARGET SK_INLINE freg cvt_f(ireg a) { return _mm512_cvtepi32_ps(a); }                                \
  /* As the 256-bit absmax: integer max of the bit patterns with the sign cleared, four independent maxima. */\
  static TARGET SK_INLINE float absmax(const float* p, int64_t n, bool* nonfinite) {                          \
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);                                                  \
    __m512i m0 = _mm512_setzero_si512(), m1 = m0, m2 = m0, m3 = m0;                                           \
    int64_t i = 0;                                                                                            \
    for (; i + 4 * L <= n; i += 4 * L) {                                                                      \
      m0 = _mm512_max_epi32(m0, _mm512_and_si512(_mm512_loadu_si512(p + i), magnitude));                      \
      m1 = _mm512_max_epi32(m1, _mm512_and_si512(_mm512_loadu_si512(p + i + L), magnitude));                  \
      m2 = _mm512_max_epi32(m2, _mm512_and_si512(_mm512_loadu_si512(p + i + 2 * L), magnitude));              \
      m3 = _mm512_max_epi32(m3, _mm512_and_si512(_mm512_loadu_si512(p + i + 3 * L), magnitude));              \
    }                                                                                                         \
    for (; i < n; i += L) {                                                                                   \
      const int k = static_cast<int>(std::min<int64_t>(L, n - i));                                            \
      m0 = _mm512_max_epi32(m0, _mm512_and_si512(_mm512_castps_si512(fload_partial(p + i, k)), magnitude));   \
    }                                                                                                         \
    const int32_t bits = _mm512_reduce_max_epi32(_mm512_max_epi32(_mm512_max_epi32(m0, m1), _mm512_max_epi32(m2, m3)));\
    *nonfinite = bits >= 0x7f800000;                                                                          \
    float r;                                                                                                  \
    std::memcpy(&r, &bits, 4);                                                                                \
    return r;                                                                                                 \
  }                                                                                                           \
  static TARGET SK_INLINE void quantize_row(const float* x, int64_t n, float inv, int8_t* q) {                 \
    const __m512 vs = _mm512_set1_ps(inv), hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);          \
    for (int64_t i = 0; i < n; i += L) {                                                                      \
      const int k = static_cast<int>(std::min<int64_t>(L, n - i));                                           \
      __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(fload_partial(x + i, k), vs),                             \
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                         \
      r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);                                                            \
      _mm_mask_storeu_epi8(q + i, mask(k), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(r)));                     \
    }                                                                                                         \
  }

struct I8Avx512Bw {
  SK_I8_512_COMMON(SK_AVX512_TARGET)
  static constexpr int kNv = 4;
  static constexpr bool kTwoSets = false;
  static constexpr Mode kMode = Mode::kSign;
  struct wreg {
    __m512i abs;     // |w| per byte (u8 <= 127), broadcast
    __mmask64 neg;   // the bytes where w < 0
  };
  static SK_AVX512_TARGET SK_INLINE wreg bcast(uint32_t w) {
    const __m512i b = _mm512_set1_epi32(static_cast<int32_t>(w));
    return {_mm512_abs_epi8(b), _mm512_movepi8_mask(b)};
  }
  // As I8Avx2 (AVX-512BW has no vpsignb: xq is negated under the byte mask of w < 0).
  static SK_AVX512_TARGET SK_INLINE ireg dot(ireg acc, const wreg& w, const uint8_t*, const int8_t* ps) {
    const __m512i x = _mm512_load_si512(ps);
    const __m512i xs = _mm512_mask_sub_epi8(x, w.neg, _mm512_setzero_si512(), x);
    const __m512i p16 = _mm512_maddubs_epi16(w.abs, xs);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
  }
};

// AVX-512BW for weights in [-kNarrowWeightMax, kNarrowWeightMax]: as I8Avx2Narrow on 16 tokens.
struct I8Avx512BwNarrow {
  SK_I8_512_COMMON(SK_AVX512_TARGET)
  static constexpr int kNv = 4;
  static constexpr bool kTwoSets = false;
  static constexpr Mode kMode = Mode::kOffset;
  using wreg = __m512i;
  static SK_AVX512_TARGET SK_INLINE wreg bcast(uint32_t w) { return _mm512_set1_epi32(static_cast<int32_t>(w)); }
  static SK_AVX512_TARGET SK_INLINE ireg dot(ireg acc, wreg w, const uint8_t* pa, const int8_t*) {
    const __m512i x = _mm512_load_si512(pa);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(x, w), _mm512_set1_epi16(1)));
  }
};

struct I8Avx512Vnni {
  SK_I8_512_COMMON(SK_AVX512VNNI_TARGET)
  static constexpr int kNv = 4;
  static constexpr bool kTwoSets = true;  // vpdpbusd: 5-cycle latency on its accumulator
  static constexpr Mode kMode = Mode::kOffset;
  using wreg = __m512i;
  static SK_AVX512VNNI_TARGET SK_INLINE wreg bcast(uint32_t w) { return _mm512_set1_epi32(static_cast<int32_t>(w)); }
  static SK_AVX512VNNI_TARGET SK_INLINE ireg dot(ireg acc, wreg w, const uint8_t* pa, const int8_t*) {
    const __m512i x = _mm512_load_si512(pa);
    // In place (the accumulator operand tied): with the intrinsic GCC copied every accumulator of row_dot's loop
    // between registers twice per iteration.
    asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
    return acc;
  }
};
#endif  // SK_X86

}  // namespace

// ==================================================================================================
// Kernel instantiations, one namespace per ISA.
// ==================================================================================================
namespace {
#define SK_NS isa_scalar
#define SK_TARGET
#define SK_VEC I8Scalar
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#if SK_X86
#define SK_NS isa_avx2
#define SK_TARGET SK_AVX2_TARGET
#define SK_VEC I8Avx2
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#define SK_NS isa_avx512bw
#define SK_TARGET SK_AVX512_TARGET
#define SK_VEC I8Avx512Bw
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#define SK_NS isa_avx2_narrow
#define SK_TARGET SK_AVX2_TARGET
#define SK_VEC I8Avx2Narrow
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#define SK_NS isa_avx512bw_narrow
#define SK_TARGET SK_AVX512_TARGET
#define SK_VEC I8Avx512BwNarrow
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#define SK_NS isa_avx512vnni
#define SK_TARGET SK_AVX512VNNI_TARGET
#define SK_VEC I8Avx512Vnni
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC

#if SK_HAVE_AVXVNNI
#define SK_NS isa_avxvnni
#define SK_TARGET SK_AVXVNNI_TARGET
#define SK_VEC I8AvxVnni
#include "spmm_cpu_int8_impl.inc"
#undef SK_NS
#undef SK_TARGET
#undef SK_VEC
#endif
#endif

// The kernels of a path; narrow: the weight's values are within +-kNarrowWeightMax (the vpmaddubsw paths then skip
// the sign trick).
const IsaOps& ops_for(Isa isa, bool narrow = false) {
#if SK_X86
  if (isa == Isa::kAvx512Vnni) return isa_avx512vnni::kOps;
  if (isa == Isa::kAvx512Bw) return narrow ? isa_avx512bw_narrow::kOps : isa_avx512bw::kOps;
  if (isa == Isa::kAvx2) return narrow ? isa_avx2_narrow::kOps : isa_avx2::kOps;
#if SK_HAVE_AVXVNNI
  if (isa == Isa::kAvxVnni) return isa_avxvnni::kOps;
#endif
#endif
  return isa_scalar::kOps;
}

// ==================================================================================================
// Driver
// ==================================================================================================

// Work-split costs, in units of the inner loop's step (one stored block times one token vector, about a cycle on
// the SIMD paths). Estimated from the instruction counts and checked against layer timings at 1-128 tokens on an
// AVX2 Zen 3 (benchmarks/kernels_int8_cpu.py): rough relative costs, not tuned to one machine's clock.
constexpr int64_t kPanelOverhead = 32;  // per panel of L rows and token vector: dequantise, transpose, store
constexpr int64_t kQuantCost = 16;      // per block column and token vector: absmax, quantise, transpose
constexpr int64_t kForkCost = 4096;     // per thread beyond the first: waking it, its scratch, the join
thread_local Scratch tl_scratch;

// tm token ranges (whole tiles) x tr row ranges.
struct Split {
  int64_t tm = 1, tr = 1;
};

// The split whose largest work item is cheapest, each thread beyond the first costing kForkCost (so a thread is
// only added when it saves more than that). Each item quantises all of its tokens, so a row split repeats the
// quantisation in every row range: for a few tokens and cheap rows (an empty or very sparse weight, a wide input)
// one thread can be faster than two. rows: the cost of all rows for one token vector (stored blocks +
// kPanelOverhead per panel); quant: kQuantCost * nkb. For each thread count t, two candidates: tokens first
// (min(t, ntiles) token ranges, the rest of t over rows) and rows only; O(threads).
Split choose_split(int64_t ntiles, int64_t nvec, int64_t vec_per_tile, int64_t npanels, int64_t rows, int64_t quant) {
  const int64_t n = at::in_parallel_region() ? 1 : at::get_num_threads();
  const auto cost = [&](int64_t tm, int64_t tr) {
    const int64_t vec_item = std::min(nvec, (ntiles + tm - 1) / tm * vec_per_tile);
    return static_cast<double>(vec_item) *
               (static_cast<double>(quant) + static_cast<double>(rows) / static_cast<double>(tr)) +
           static_cast<double>(kForkCost) * static_cast<double>(tm * tr - 1);
  };
  Split best;
  double best_cost = cost(1, 1);
  for (int64_t t = 2; t <= n; ++t) {
    const int64_t tm = std::min(t, ntiles);
    for (const Split c : {Split{tm, std::min(t / tm, npanels)}, Split{1, std::min(t, npanels)}}) {
      const double v = cost(c.tm, c.tr);
      if (v < best_cost) {
        best_cost = v;
        best = c;
      }
    }
  }
  return best;
}

size_t round64(size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni: return "avx512-vnni";
    case Isa::kAvxVnni: return "avx-vnni";
    case Isa::kAvx512Bw: return "avx512bw";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool isa_compiled(Isa isa) {
  if (isa == Isa::kScalar) return true;
  if (isa == Isa::kAvxVnni) return SK_HAVE_AVXVNNI != 0;
  return SK_X86 != 0;
}

bool isa_supported(Isa isa) {
  if (isa == Isa::kScalar) return true;
  if (!isa_compiled(isa)) return false;
#if SK_X86
  __builtin_cpu_init();  // libgcc also checks that the OS saves the AVX / AVX-512 state (XCR0)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512bw = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  switch (isa) {
    case Isa::kAvx2: return avx2;
    case Isa::kAvx512Bw: return avx512bw;
    case Isa::kAvx512Vnni: return avx512bw && __builtin_cpu_supports("avx512vnni");
#if SK_HAVE_AVXVNNI
    case Isa::kAvxVnni: return avx2 && __builtin_cpu_supports("avxvnni");
#endif
    default: return false;
  }
#else
  return false;
#endif
}

Isa best_isa() {
  static const Isa best = [] {
    for (Isa isa : {Isa::kAvx512Vnni, Isa::kAvxVnni, Isa::kAvx512Bw, Isa::kAvx2}) {
      if (isa_supported(isa)) return isa;
    }
    return Isa::kScalar;
  }();
  return best;
}

void validate_weight(B4Weight& w, Isa isa) {
  TORCH_CHECK_VALUE(isa_supported(isa), "sparsekit: int8 ISA ", isa_name(isa), " is not supported by this CPU");
  TORCH_CHECK_VALUE(w.in >= 0 && w.in <= kMaxInFeatures, "sparsekit: int8 kernels need in_features in [0, ",
                    kMaxInFeatures, "], got ", w.in);
  TORCH_CHECK_VALUE(w.out >= 0 && w.out <= INT32_MAX, "sparsekit: out_features must be in [0, 2**31-1], got ",
                    w.out);
  TORCH_CHECK_VALUE(w.nkb == (w.in + 3) / 4, "sparsekit: nkb does not match in_features");
  TORCH_CHECK_VALUE(w.nblk >= 0 && w.nblk <= INT32_MAX, "sparsekit: ", w.nblk,
                    " stored blocks do not fit the int32 ptr (at most 2**31-1)");
  const int32_t* pp = w.ptr;
  TORCH_CHECK_VALUE(pp[0] == 0, "sparsekit: ptr[0] must be 0, got ", pp[0]);
  TORCH_CHECK_VALUE(pp[w.out] == w.nblk, "sparsekit: ptr[-1] must equal the number of blocks len(col) = ", w.nblk,
                    ", got ", pp[w.out]);
  const IsaOps& ops = ops_for(isa);
  if (!ops.non_decreasing(pp, w.out + 1)) {
    for (int64_t o = 0; o < w.out; ++o) {
      TORCH_CHECK_VALUE(pp[o + 1] >= pp[o], "sparsekit: ptr must be non-decreasing, got ptr[", o, "] = ", pp[o],
                        " > ptr[", o + 1, "] = ", pp[o + 1]);
    }
  }
  if (!ops.col_in_range(w.col, w.nblk, w.nkb)) {
    for (int64_t e = 0; e < w.nblk; ++e) {
      const int64_t c = w.col[e];
      if (c >= 0 && c < w.nkb) continue;
      const int64_t o = std::upper_bound(pp, pp + w.out + 1, static_cast<int32_t>(e)) - pp - 1;
      TORCH_CHECK_VALUE(false, "sparsekit: block column index out of range: block ", e, " (row ", o, ") has col = ",
                        c, "; in_features = ", w.in, " has ", w.nkb, " block columns of 4");
    }
  }
  int64_t val_sum = 0;
  const int max_abs = ops.scan_values(w.val, 4 * w.nblk, &val_sum);
  if (max_abs > 127) {
    for (int64_t i = 0; i < 4 * w.nblk; ++i) {
      TORCH_CHECK_VALUE(w.val[i] != -128, "sparsekit: int8 weight value -128 at val[", i,
                        "]; values must be in [-127, 127] (symmetric quantisation)");
    }
  }
  int64_t wsum_total = 0;
  for (int64_t o = 0; o < w.out; ++o) wsum_total += w.wsum[o];
  TORCH_CHECK_VALUE(wsum_total == val_sum, "sparsekit: wsum does not match val (the rows' weight sums total ",
                    wsum_total, ", the values ", val_sum, "): the packed int8 weight was changed after packing; "
                    "pack it again (pack_cpu_int8_b4)");
  w.max_abs = max_abs;
}

void b4_linear(const float* x, int64_t M, int64_t ldx, const B4Weight& w, const Output& out, Isa isa) {
  TORCH_CHECK(isa_supported(isa), "sparsekit spmm_cpu_int8: ISA ", isa_name(isa), " is not supported by this CPU");
  TORCH_CHECK(w.in <= kMaxInFeatures, "sparsekit spmm_cpu_int8: in_features > ", kMaxInFeatures);
  if (M <= 0) return;
  if (w.out <= 0) {  // nothing to compute, but the token scales are still an output
    if (out.x_scale == nullptr) return;
  }
  const IsaOps& ops = ops_for(isa, w.max_abs <= kNarrowWeightMax);
  const Problem p{x, M, ldx, w, out};
  const int64_t L = ops.L, Mt = ops.Mt;
  const int64_t npanels = std::max<int64_t>(1, (w.out + L - 1) / L);

  // Cost of each row panel (stored blocks + overhead), prefix sums, for load balancing.
  std::vector<int64_t> prefix(npanels + 1, 0);
  for (int64_t pn = 0; pn < npanels; ++pn) {
    const int64_t r0 = std::min(w.out, pn * L), r1 = std::min(w.out, (pn + 1) * L);
    prefix[pn + 1] = prefix[pn] + kPanelOverhead + (w.ptr[r1] - w.ptr[r0]);
  }
  const int64_t ntiles = (M + Mt - 1) / Mt;
  const int64_t nvec = (M + L - 1) / L;
  const Split split = choose_split(ntiles, nvec, Mt / L, npanels, prefix[npanels], kQuantCost * w.nkb);
  const int64_t tm = split.tm, tr = split.tr;  // token ranges, row ranges
  const std::vector<int64_t> cut = balanced_cuts(prefix, tr);

  // Scratch per item: activations for up to kChunkTiles tiles, token scales, one token row, panel accumulators.
  const int64_t tiles_per_range = (ntiles + tm - 1) / tm;
  const int64_t Tc = std::min(kChunkTiles, tiles_per_range) * Mt;
  const size_t act = round64(static_cast<size_t>(w.nkb) * static_cast<size_t>(Tc) * 4);
  const size_t qrows = round64(static_cast<size_t>(L * 4 * ((w.nkb + L - 1) / L * L)));
  const size_t bytes = act + round64(Tc * sizeof(float)) + qrows +
                       round64(kGroupRows * Mt * sizeof(int32_t));
  std::vector<char> failed(tm * tr, 0);
  const bool dequant = out.kind == Output::Kind::kDequantBias;
  at::parallel_for(0, tm * tr, 1, [&](int64_t b, int64_t e) {
    for (int64_t idx = b; idx < e; ++idx) {
      const int64_t im = idx / tr, ir = idx % tr;
      uint8_t* s = static_cast<uint8_t*>(tl_scratch.get_bytes(bytes));
      if (s == nullptr) {
        failed[idx] = 1;
        continue;
      }
      Item it;
      it.m0 = std::min(M, (im * ntiles / tm) * Mt);
      it.m1 = std::min(M, ((im + 1) * ntiles / tm) * Mt);
      it.r0 = std::min(w.out, cut[ir] * L);
      it.r1 = std::min(w.out, cut[ir + 1] * L);
      it.write_scale = ir == 0;
      it.Tc = Tc;
      uint8_t* q = s;
      it.xa = q;
      it.xs = reinterpret_cast<int8_t*>(q);
      q += act;
      it.tscale = reinterpret_cast<float*>(q);
      q += round64(Tc * sizeof(float));
      it.qrow = reinterpret_cast<int8_t*>(q);
      q += qrows;
      it.yt = reinterpret_cast<int32_t*>(q);
      if (dequant) {
        ops.run_dequant(p, it);
      } else {
        ops.run_int32(p, it);
      }
      tl_scratch.trim();
    }
  });
  for (char f : failed) TORCH_CHECK(!f, "sparsekit spmm_cpu_int8: out of memory (scratch buffers)");
}

}  // namespace spmm_cpu_int8
}  // namespace sparsekit
