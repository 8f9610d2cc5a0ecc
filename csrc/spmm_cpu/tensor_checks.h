// The checks every pybind11 binding of sparsekit's CPU kernels makes on a 1-D tensor argument before a kernel
// indexes it (binding_checks.h, spmm_cpu_int8_binding.cpp); errors are ValueError naming the argument.
#pragma once

#include <torch/extension.h>

#include <cstdint>

namespace sparsekit {
namespace binding {

// t is a contiguous, strided, 1-D CPU tensor of numel elements (numel < 0: any number). The dtype is the
// caller's check (it comes first, as a TypeError).
inline void check_index_tensor(const at::Tensor& t, const char* name, int64_t numel) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "sparsekit: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, "sparsekit: ", name, " must be a strided tensor, got layout ",
                    t.layout());
  TORCH_CHECK_VALUE(t.dim() == 1, "sparsekit: ", name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), "sparsekit: ", name, " must be contiguous, got stride ", t.strides());
  if (numel >= 0) {
    TORCH_CHECK_VALUE(t.numel() == numel, "sparsekit: ", name, " has ", t.numel(), " elements, expected ", numel);
  }
}

}  // namespace binding
}  // namespace sparsekit
