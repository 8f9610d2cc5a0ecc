// CUDA CSR x dense kernel for Linear layers with few tokens; layout and techniques in spmm_cuda.h.
#include "spmm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sparsekit {
namespace spmm_cuda {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }

// kVec consecutive elements read with one aligned load (16 or 8 bytes).
template <typename E>
struct alignas(sizeof(E) * kVec) Vec {
  E v[kVec];
};

// One subwarp of SUBWARP lanes per row (rows taken in row_order), TOKENS tokens per block (grid y).
template <typename T, typename I, int SUBWARP, int TOKENS>
__global__ void __launch_bounds__(kThreads)
    csr_linear_kernel(int tokens, int out_features, int nnz, const T* __restrict__ x, int64_t ldx,
                      const int32_t* __restrict__ row_ptr, const I* __restrict__ col_idx,
                      const T* __restrict__ values, const int32_t* __restrict__ row_order,
                      const float* __restrict__ bias, T* __restrict__ y, int64_t ldy) {
  static_assert(kThreads % 32 == 0 && 32 % SUBWARP == 0, "subwarps must tile whole warps");
  static_assert(TOKENS <= SUBWARP, "each token's result is stored by its own lane");
  const int lane = threadIdx.x % SUBWARP;
  const int slot = blockIdx.x * (kThreads / SUBWARP) + threadIdx.x / SUBWARP;
  // Subwarps past the last row do no work but stay for the shuffles below (full-warp masks).
  const bool active = slot < out_features;
  const int row = active ? row_order[slot] : 0;
  const int start = active ? row_ptr[row] : 0;
  const int end = active ? row_ptr[row + 1] : 0;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * TOKENS;
  const int ntok = static_cast<int>(min(static_cast<int64_t>(TOKENS), tokens - t0));
  const T* xt = x + t0 * ldx;

  float acc[TOKENS];
#pragma unroll
  for (int t = 0; t < TOKENS; ++t) acc[t] = 0.f;

  // Reverse-offset alignment: start at the vector boundary at or before `start`; entries outside
  // [start, end) (the previous or next row's) get weight 0 and column 0.
  for (int p = (start & ~(kVec - 1)) + lane * kVec; p < end; p += SUBWARP * kVec) {
    T v[kVec];
    I c[kVec];
    if (p + kVec <= nnz) {
      const Vec<T> vv = *reinterpret_cast<const Vec<T>*>(values + p);
      const Vec<I> cc = *reinterpret_cast<const Vec<I>*>(col_idx + p);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        v[i] = vv.v[i];
        c[i] = cc.v[i];
      }
    } else {  // the last, partial vector of the arrays: scalar loads, clamped inside the arrays
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const int e = min(p + i, nnz - 1);
        v[i] = values[e];
        c[i] = col_idx[e];
      }
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int e = p + i;
      const bool ok = e >= start && e < end;
      const float w = ok ? to_float(v[i]) : 0.f;
      const int64_t col = ok ? static_cast<int64_t>(c[i]) : 0;
#pragma unroll
      for (int t = 0; t < TOKENS; ++t) {
        if (t < ntok) acc[t] += w * to_float(xt[t * ldx + col]);
      }
    }
  }

  // Butterfly reduction inside the subwarp: afterwards every lane holds the row's sums.
#pragma unroll
  for (int t = 0; t < TOKENS; ++t) {
#pragma unroll
    for (int offset = SUBWARP / 2; offset > 0; offset /= 2) {
      acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], offset, SUBWARP);
    }
  }
  if (!active) return;
  const float b = bias != nullptr ? bias[row] : 0.f;
#pragma unroll
  for (int t = 0; t < TOKENS; ++t) {  // lane t stores token t (compile-time indices keep acc in registers)
    if (lane == t && t < ntok) y[(t0 + t) * ldy + row] = from_float<T>(acc[t] + b);
  }
}

template <typename T, typename I, int SUBWARP, int TOKENS>
cudaError_t launch(int64_t tokens, int64_t out_features, int64_t nnz, const void* x, int64_t ldx,
                   const int32_t* row_ptr, const void* col_idx, const void* values, const int32_t* row_order,
                   const float* bias, void* y, int64_t ldy, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kThreads / SUBWARP;
  const dim3 grid(static_cast<unsigned>((out_features + kRowsPerBlock - 1) / kRowsPerBlock),
                  static_cast<unsigned>((tokens + TOKENS - 1) / TOKENS));
  csr_linear_kernel<T, I, SUBWARP, TOKENS><<<grid, kThreads, 0, stream>>>(
      static_cast<int>(tokens), static_cast<int>(out_features), static_cast<int>(nnz), static_cast<const T*>(x), ldx,
      row_ptr, static_cast<const I*>(col_idx), static_cast<const T*>(values), row_order, bias, static_cast<T*>(y),
      ldy);
  return cudaGetLastError();
}

template <typename T, typename I, int SUBWARP>
cudaError_t dispatch_tokens(int64_t tokens, int64_t out_features, int64_t nnz, const void* x, int64_t ldx,
                            const int32_t* row_ptr, const void* col_idx, const void* values,
                            const int32_t* row_order, const float* bias, void* y, int64_t ldy, cudaStream_t stream) {
  // The smallest power-of-two tile that holds all tokens, up to kMaxTokenTile.
  if (tokens == 1)
    return launch<T, I, SUBWARP, 1>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias, y,
                                    ldy, stream);
  if (tokens == 2)
    return launch<T, I, SUBWARP, 2>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias, y,
                                    ldy, stream);
  if (tokens <= 4)
    return launch<T, I, SUBWARP, 4>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias, y,
                                    ldy, stream);
  return launch<T, I, SUBWARP, kMaxTokenTile>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order,
                                              bias, y, ldy, stream);
}

template <typename T, typename I>
cudaError_t dispatch_subwarp(int64_t tokens, int64_t out_features, int64_t nnz, const void* x, int64_t ldx,
                             const int32_t* row_ptr, const void* col_idx, const void* values,
                             const int32_t* row_order, const float* bias, void* y, int64_t ldy, cudaStream_t stream) {
  switch (choose_subwarp(nnz, out_features)) {
    case 8:
      return dispatch_tokens<T, I, 8>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias, y,
                                      ldy, stream);
    case 16:
      return dispatch_tokens<T, I, 16>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias,
                                       y, ldy, stream);
    default:
      return dispatch_tokens<T, I, 32>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias,
                                       y, ldy, stream);
  }
}

template <typename T>
cudaError_t dispatch_index(IndexType index_type, int64_t tokens, int64_t out_features, int64_t nnz, const void* x,
                           int64_t ldx, const int32_t* row_ptr, const void* col_idx, const void* values,
                           const int32_t* row_order, const float* bias, void* y, int64_t ldy, cudaStream_t stream) {
  if (index_type == IndexType::kInt16)
    return dispatch_subwarp<T, int16_t>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias,
                                        y, ldy, stream);
  return dispatch_subwarp<T, int32_t>(tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order, bias,
                                      y, ldy, stream);
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

int choose_subwarp(int64_t nnz, int64_t out_features) {
  const int64_t mean = out_features > 0 ? nnz / out_features : 0;
  if (mean <= 8 * kVec) return 8;
  if (mean <= 16 * kVec) return 16;
  return 32;
}

cudaError_t csr_linear(DType dtype, IndexType index_type, int64_t tokens, int64_t in_features, int64_t out_features,
                       int64_t nnz, const void* x, int64_t ldx, const int32_t* row_ptr, const void* col_idx,
                       const void* values, const int32_t* row_order, const float* bias, void* y, int64_t ldy,
                       cudaStream_t stream) {
  constexpr int64_t kInt32Max = 2147483647;
  if (tokens < 0 || in_features < 0 || out_features < 0 || nnz < 0 || in_features > kInt32Max ||
      out_features > kInt32Max || nnz > kInt32Max || ldx < in_features || ldy < out_features ||
      (tokens + kMaxTokenTile - 1) / kMaxTokenTile > 65535) {
    return cudaErrorInvalidValue;
  }
  if (tokens == 0 || out_features == 0) return cudaSuccess;
  const size_t value_bytes = dtype == DType::kFloat32 ? 4 : 2;
  const size_t index_bytes = index_type == IndexType::kInt16 ? 2 : 4;
  if (!aligned(values, value_bytes * kVec) || !aligned(col_idx, index_bytes * kVec)) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return dispatch_index<float>(index_type, tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values, row_order,
                                   bias, y, ldy, stream);
    case DType::kBFloat16:
      return dispatch_index<__nv_bfloat16>(index_type, tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values,
                                           row_order, bias, y, ldy, stream);
    case DType::kFloat16:
      return dispatch_index<__half>(index_type, tokens, out_features, nnz, x, ldx, row_ptr, col_idx, values,
                                    row_order, bias, y, ldy, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace spmm_cuda
}  // namespace sparsekit
