// CUDA CSR x dense kernel for Linear layers with few tokens: y = x W^T + bias (Sputnik-style, CUDA cores).
//
// No torch dependency: this header and spmm_cuda.cu compile standalone with nvcc (the test suite
// compile-checks them); the torch binding lives in spmm_cuda_binding.cpp.
//
// Layout (the GPU CSR layout of sparsekit/kernels/triton_csr.py, i.e. CSRFormat's, values in x's dtype):
//   W [out, in], nnz stored entries.
//   row_ptr   int32 [out + 1]   row r owns entries [row_ptr[r], row_ptr[r + 1]); row_ptr[out] == nnz.
//   col_idx   int16 or int32 [nnz]   column of each entry, in [0, in).
//   values    T [nnz]               W[r, col_idx[k]] = values[k]; T = float, __nv_bfloat16 or __half.
//   row_order int32 [out]           rows sorted by length, longest first (the "row swizzle").
//   x         T [tokens, in], row stride ldx (elements); y T [tokens, out], row stride ldy.
//   bias      float32 [out] or nullptr.
// values and col_idx must be 16-byte aligned (fresh allocations are): the kernel reads them with vector loads.
//
// Techniques (after Gale et al., "Sparse GPU Kernels for Deep Learning", SC20; ideas only, no code reused):
//   * row swizzle: consecutive subwarps take rows of similar length (row_order), so warps finish together;
//   * subwarp tiling: a row is handled by a subwarp of 8, 16 or 32 lanes, chosen from the mean row length,
//     so short rows do not leave most of a warp idle;
//   * vector loads with reverse-offset alignment: a subwarp starts at the aligned address at or before its
//     row's first entry and masks the entries of the previous row, so 4 values and 4 indices arrive per load
//     without padding the CSR arrays;
//   * a register tile of up to 8 tokens: every weight entry read is used for all of them; more tokens take
//     more blocks along the grid's y axis (each re-reads the weight: meant for 1-16 tokens);
//   * float32 accumulation, subwarp shuffle reduction, fused bias, one store per (token, row).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sparsekit {
namespace spmm_cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };
enum class IndexType : int { kInt16 = 0, kInt32 = 1 };

// Threads per block of the kernel.
constexpr int kThreads = 128;
// Entries per vector load (4 floats = 16 bytes; 4 bf16 / fp16 = 8 bytes; 4 int32 = 16 bytes; 4 int16 = 8 bytes).
constexpr int kVec = 4;
// Most tokens in one block's register tile.
constexpr int kMaxTokenTile = 8;

// Subwarp width (8, 16 or 32 lanes) for a mean row length: about one vector load per lane and step.
int choose_subwarp(int64_t nnz, int64_t out_features);

// Launches y = x W^T + bias on `stream`. Returns cudaSuccess, cudaErrorInvalidValue for bad sizes or
// misaligned pointers, or the launch error (cudaGetLastError after the launch). tokens == 0 or
// out_features == 0 launches nothing. Every argument is trusted beyond these checks (validate at pack time).
cudaError_t csr_linear(DType dtype, IndexType index_type, int64_t tokens, int64_t in_features, int64_t out_features,
                       int64_t nnz, const void* x, int64_t ldx, const int32_t* row_ptr, const void* col_idx,
                       const void* values, const int32_t* row_order, const float* bias, void* y, int64_t ldy,
                       cudaStream_t stream);

}  // namespace spmm_cuda
}  // namespace sparsekit
