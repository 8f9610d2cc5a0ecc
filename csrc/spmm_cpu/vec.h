// SIMD vector back-ends shared by sparsekit's CPU kernels (spmm_cpu.cpp, encoder_cpu.cpp).
//
// Each back-end provides L lanes of fp32 and the handful of operations the kernels use; the kernel bodies
// (*_impl.inc) are written once against this interface and compiled once per ISA with per-function target
// attributes (SK_AVX2_TARGET / SK_AVX512_TARGET of isa_macros.h), so the translation units themselves are built for the
// baseline target and only run a SIMD path after a CPU check. Everything here has internal linkage (an
// anonymous namespace): each translation unit gets its own copy, so no AVX code can leak into baseline code
// through the linker.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "isa_macros.h"

namespace sparsekit {
namespace spmm_cpu {
namespace {

// ==================================================================================================
// Vector back-ends. Each provides L lanes of fp32 and the handful of operations the kernels use.
// ==================================================================================================

// Portable fallback: plain loops over 16 floats (the compiler vectorises them for the baseline ISA).
struct VecScalar {
  static constexpr int L = 16;
  static constexpr int kRegs = 32;
  struct reg {
    float v[L];
  };
  struct ireg {
    int64_t v[L];
  };
  static SK_INLINE reg zero() { return set1(0.0f); }
  static SK_INLINE reg set1(float a) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = a;
    return r;
  }
  static SK_INLINE reg load(const float* p) {
    reg r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static SK_INLINE reg loadu(const float* p) { return load(p); }
  static SK_INLINE void store(float* p, const reg& a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static SK_INLINE void storeu(float* p, const reg& a) { store(p, a); }
  static SK_INLINE reg load_partial(const float* p, int n) {
    reg r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static SK_INLINE void store_partial(float* p, const reg& a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  static SK_INLINE reg fmadd(const reg& a, const reg& b, const reg& c) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static SK_INLINE reg add(const reg& a, const reg& b) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
#define SK_SCALAR_BINARY(name, expr)                  \
  static SK_INLINE reg name(const reg& a, const reg& b) { \
    reg r;                                              \
    for (int i = 0; i < L; ++i) r.v[i] = (expr);        \
    return r;                                           \
  }
  SK_SCALAR_BINARY(sub, a.v[i] - b.v[i])
  SK_SCALAR_BINARY(mul, a.v[i] * b.v[i])
  SK_SCALAR_BINARY(div, a.v[i] / b.v[i])
  SK_SCALAR_BINARY(max, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
  SK_SCALAR_BINARY(min, a.v[i] < b.v[i] ? a.v[i] : b.v[i])
  // |a| carrying the sign of b
  SK_SCALAR_BINARY(copysign, std::copysign(a.v[i], b.v[i]))
#undef SK_SCALAR_BINARY
  static SK_INLINE reg abs(const reg& a) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = std::fabs(a.v[i]);
    return r;
  }
  // Nearest integer (ties to even), as float.
  static SK_INLINE reg round(const reg& a) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = std::nearbyint(a.v[i]);
    return r;
  }
  // 2**n for integral n in [-126, 127].
  static SK_INLINE reg exp2i(const reg& n) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = std::ldexp(1.0f, static_cast<int>(n.v[i]));
    return r;
  }
  // a where x >= t, else 0 (NaN x keeps a).
  static SK_INLINE reg zero_below(const reg& a, const reg& x, float t) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = x.v[i] < t ? 0.0f : a.v[i];
    return r;
  }
  static SK_INLINE float hmax(const reg& a) {
    float m = a.v[0];
    for (int i = 1; i < L; ++i) m = a.v[i] > m ? a.v[i] : m;
    return m;
  }
  static SK_INLINE float hsum(const reg& a) {
    float s = 0.0f;
    for (int i = 0; i < L; ++i) s += a.v[i];
    return s;
  }
  // Lanes [0, n) of the index vector: base + p[i]; lanes past n are not read.
  static SK_INLINE ireg load_idx8(const uint8_t* p, int n, int32_t base) {
    ireg r;
    for (int i = 0; i < L; ++i) r.v[i] = i < n ? base + p[i] : 0;
    return r;
  }
  // base[idx[i]] for lanes i < n, 0 elsewhere.
  static SK_INLINE reg gather(const float* base, const ireg& idx, int n) {
    reg r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = base[idx.v[i]];
    return r;
  }
  static SK_INLINE void transpose(reg* r) {
    for (int i = 0; i < L; ++i)
      for (int j = i + 1; j < L; ++j) std::swap(r[i].v[j], r[j].v[i]);
  }
};

#if SK_X86
alignas(64) const int32_t kMaskTable8[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

struct VecAvx2 {
  static constexpr int L = 8;
  static constexpr int kRegs = 16;
  using reg = __m256;
  using ireg = __m256i;
  static SK_AVX2_TARGET SK_INLINE __m256i mask(int n) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable8 + 8 - n));
  }
  static SK_AVX2_TARGET SK_INLINE reg zero() { return _mm256_setzero_ps(); }
  static SK_AVX2_TARGET SK_INLINE reg set1(float a) { return _mm256_set1_ps(a); }
  static SK_AVX2_TARGET SK_INLINE reg load(const float* p) { return _mm256_load_ps(p); }
  static SK_AVX2_TARGET SK_INLINE reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static SK_AVX2_TARGET SK_INLINE void store(float* p, reg a) { _mm256_store_ps(p, a); }
  static SK_AVX2_TARGET SK_INLINE void storeu(float* p, reg a) { _mm256_storeu_ps(p, a); }
  static SK_AVX2_TARGET SK_INLINE reg load_partial(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static SK_AVX2_TARGET SK_INLINE void store_partial(float* p, reg a, int n) { _mm256_maskstore_ps(p, mask(n), a); }
  static SK_AVX2_TARGET SK_INLINE reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static SK_AVX2_TARGET SK_INLINE reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static SK_AVX2_TARGET SK_INLINE reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static SK_AVX2_TARGET SK_INLINE reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static SK_AVX2_TARGET SK_INLINE reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static SK_AVX2_TARGET SK_INLINE reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static SK_AVX2_TARGET SK_INLINE reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static SK_AVX2_TARGET SK_INLINE reg abs(reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static SK_AVX2_TARGET SK_INLINE reg copysign(reg a, reg b) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sign, a), _mm256_and_ps(sign, b));
  }
  static SK_AVX2_TARGET SK_INLINE reg round(reg a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static SK_AVX2_TARGET SK_INLINE reg exp2i(reg n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static SK_AVX2_TARGET SK_INLINE reg zero_below(reg a, reg x, float t) {
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(t), _CMP_LT_OQ), a);
  }
  static SK_AVX2_TARGET SK_INLINE float hmax(reg a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static SK_AVX2_TARGET SK_INLINE float hsum(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  static SK_AVX2_TARGET SK_INLINE ireg load_idx8(const uint8_t* p, int n, int32_t base) {
    __m128i b;
    if (n == L) {
      b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    } else {
      alignas(16) uint8_t tmp[16] = {0};
      std::memcpy(tmp, p, static_cast<size_t>(n));
      b = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    }
    return _mm256_add_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(base));
  }
  static SK_AVX2_TARGET SK_INLINE reg gather(const float* base, ireg idx, int n) {
    if (n == L) return _mm256_i32gather_ps(base, idx, 4);
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(mask(n)), 4);
  }
  static SK_AVX2_TARGET SK_INLINE void transpose(reg* r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
  }
};

struct VecAvx512 {
  static constexpr int L = 16;
  static constexpr int kRegs = 32;
  using reg = __m512;
  using ireg = __m512i;
  static SK_AVX512_TARGET SK_INLINE __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static SK_AVX512_TARGET SK_INLINE reg zero() { return _mm512_setzero_ps(); }
  static SK_AVX512_TARGET SK_INLINE reg set1(float a) { return _mm512_set1_ps(a); }
  static SK_AVX512_TARGET SK_INLINE reg load(const float* p) { return _mm512_load_ps(p); }
  static SK_AVX512_TARGET SK_INLINE reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static SK_AVX512_TARGET SK_INLINE void store(float* p, reg a) { _mm512_store_ps(p, a); }
  static SK_AVX512_TARGET SK_INLINE void storeu(float* p, reg a) { _mm512_storeu_ps(p, a); }
  static SK_AVX512_TARGET SK_INLINE reg load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static SK_AVX512_TARGET SK_INLINE void store_partial(float* p, reg a, int n) { _mm512_mask_storeu_ps(p, mask(n), a); }
  static SK_AVX512_TARGET SK_INLINE reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static SK_AVX512_TARGET SK_INLINE reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static SK_AVX512_TARGET SK_INLINE reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static SK_AVX512_TARGET SK_INLINE reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static SK_AVX512_TARGET SK_INLINE reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static SK_AVX512_TARGET SK_INLINE reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static SK_AVX512_TARGET SK_INLINE reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static SK_AVX512_TARGET SK_INLINE reg abs(reg a) { return _mm512_abs_ps(a); }
  static SK_AVX512_TARGET SK_INLINE reg copysign(reg a, reg b) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    return _mm512_or_ps(_mm512_andnot_ps(sign, a), _mm512_and_ps(sign, b));
  }
  static SK_AVX512_TARGET SK_INLINE reg round(reg a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static SK_AVX512_TARGET SK_INLINE reg exp2i(reg n) { return _mm512_scalef_ps(_mm512_set1_ps(1.0f), n); }
  static SK_AVX512_TARGET SK_INLINE reg zero_below(reg a, reg x, float t) {
    return _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(x, _mm512_set1_ps(t), _CMP_LT_OQ), _mm512_setzero_ps());
  }
  static SK_AVX512_TARGET SK_INLINE float hmax(reg a) { return _mm512_reduce_max_ps(a); }
  static SK_AVX512_TARGET SK_INLINE float hsum(reg a) { return _mm512_reduce_add_ps(a); }
  static SK_AVX512_TARGET SK_INLINE ireg load_idx8(const uint8_t* p, int n, int32_t base) {
    const __m128i b = n == L ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)) : _mm_maskz_loadu_epi8(mask(n), p);
    return _mm512_add_epi32(_mm512_cvtepu8_epi32(b), _mm512_set1_epi32(base));
  }
  static SK_AVX512_TARGET SK_INLINE reg gather(const float* base, ireg idx, int n) {
    if (n == L) return _mm512_i32gather_ps(idx, base, 4);
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask(n), idx, base, 4);
  }
  static SK_AVX512_TARGET SK_INLINE void transpose(reg* r) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
      r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
      r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 16; i += 8) {
      for (int j = 0; j < 4; ++j) {
        t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
        t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);
      }
    }
    for (int j = 0; j < 8; ++j) {
      r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
      r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
    }
  }
};
#endif  // SK_X86

}  // namespace
}  // namespace spmm_cpu
}  // namespace sparsekit
