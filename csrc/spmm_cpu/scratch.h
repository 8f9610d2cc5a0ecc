// Per-thread scratch memory of sparsekit's CPU kernels (spmm_cpu.cpp, encoder_cpu.cpp, spmm_cpu_int8.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#if defined(_WIN32)
#include <malloc.h>
#endif

namespace sparsekit {
namespace {

constexpr size_t kRetainBytes = 16u << 20;  // per-thread scratch kept between calls (Scratch::trim)

void* aligned_alloc64(size_t bytes) {
#if defined(_WIN32)
  return _aligned_malloc(bytes, 64);
#else
  void* p = nullptr;
  return posix_memalign(&p, 64, bytes) == 0 ? p : nullptr;
#endif
}

void aligned_free(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}

// Grow-only, 64-byte-aligned scratch buffer, one per thread (allocating per call would page-fault).
class Scratch {
 public:
  ~Scratch() { aligned_free(ptr_); }
  // At least nfloats floats, or nullptr when out of memory (valid until the next get / get_bytes / trim).
  float* get(size_t nfloats) { return static_cast<float*>(get_bytes(nfloats * sizeof(float))); }
  // At least `bytes` bytes, 64-byte aligned, or nullptr when out of memory.
  void* get_bytes(size_t bytes) {
    bytes = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    if (bytes > cap_) {
      aligned_free(ptr_);
      ptr_ = aligned_alloc64(bytes);
      cap_ = ptr_ != nullptr ? bytes : 0;
    }
    return ptr_;
  }
  void trim() {  // do not keep huge buffers alive between calls
    if (cap_ > kRetainBytes) {
      aligned_free(ptr_);
      ptr_ = nullptr;
      cap_ = 0;
    }
  }

 private:
  void* ptr_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace
}  // namespace sparsekit
