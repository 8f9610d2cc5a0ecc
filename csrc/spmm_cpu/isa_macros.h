// Compiler / ISA macros shared by sparsekit's CPU kernels (vec.h and the files built on it, spmm_cpu_int8.cpp).
//
// SK_X86: 1 when the SIMD paths can be compiled (x86 with GCC / Clang target attributes; other compilers build
// the scalar path only). SK_INLINE: force-inline. SK_AVX2_TARGET / SK_AVX512_TARGET (only where SK_X86): the
// per-function target attributes of the AVX2 + FMA and AVX-512 F/BW/VL/DQ paths, so that the translation units
// themselves are built for the baseline target and only run a SIMD path after a CPU check.
#pragma once

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SK_X86 1
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
// gcc's own intrinsic headers (_mm512_undefined_*, e.g. in _mm512_reduce_add_ps) trip these warnings when
// inlined into target functions.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#else
#define SK_X86 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SK_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define SK_INLINE __forceinline
#else
#define SK_INLINE inline
#endif

#if SK_X86
#define SK_AVX2_TARGET __attribute__((target("avx2,fma")))
#define SK_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#endif
