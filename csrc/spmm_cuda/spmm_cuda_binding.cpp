// pybind11 binding of the CUDA CSR kernel: the module sparsekit._C_cuda.
//
// The op sparsekit::cuda_csr_linear is declared once, in Python (sparsekit/kernels/cuda.py,
// torch.library.custom_op + register_fake); its CUDA implementation calls linear() below. User-facing
// validation with ValueError / TypeError messages happens in Python; the checks here are O(1) per call
// (devices, dtypes, sizes, alignment). Pointer monotonicity and column ranges are validated once, at pack
// time (sparsekit.kernels.gpu_csr_layout.pack_gpu_csr), and trusted here.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>
#if __has_include(<torch/headeronly/version.h>)
#include <torch/headeronly/version.h>
#elif __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#include <cstdint>

#include "spmm_cuda.h"

namespace {

using sparsekit::spmm_cuda::DType;
using sparsekit::spmm_cuda::IndexType;

void check_1d(const at::Tensor& t, const char* name, const at::Device& device, int64_t numel) {
  TORCH_CHECK_VALUE(t.device() == device, "sparsekit: ", name, " is on ", t.device(), ", x on ", device);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.is_contiguous(), "sparsekit: ", name, " must be 1-D and contiguous");
  if (numel >= 0) {
    TORCH_CHECK_VALUE(t.numel() == numel, "sparsekit: ", name, " has ", t.numel(), " elements, expected ", numel);
  }
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values,
                  const at::Tensor& row_order, int64_t in_features, int64_t out_features,
                  const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(x.is_cuda(), "sparsekit: x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == in_features && x.stride(1) == 1,
                    "sparsekit: x must be [M, ", in_features, "] with unit column stride, got ", x.sizes());
  TORCH_CHECK_TYPE(values.scalar_type() == x.scalar_type(), "sparsekit: values are ", values.scalar_type(),
                   " but x is ", x.scalar_type());
  DType dtype;
  switch (x.scalar_type()) {
    case at::kFloat: dtype = DType::kFloat32; break;
    case at::kBFloat16: dtype = DType::kBFloat16; break;
    case at::kHalf: dtype = DType::kFloat16; break;
    default: TORCH_CHECK_TYPE(false, "sparsekit: x must be float32, bfloat16 or float16, got ", x.scalar_type());
  }
  TORCH_CHECK_TYPE(col_idx.scalar_type() == at::kShort || col_idx.scalar_type() == at::kInt,
                   "sparsekit: col_idx must be int16 or int32, got ", col_idx.scalar_type());
  TORCH_CHECK_TYPE(row_ptr.scalar_type() == at::kInt && row_order.scalar_type() == at::kInt,
                   "sparsekit: row_ptr and row_order must be int32");
  const at::Device device = x.device();
  const int64_t nnz = values.numel();
  check_1d(values, "values", device, -1);
  check_1d(col_idx, "col_idx", device, nnz);
  check_1d(row_ptr, "row_ptr", device, out_features + 1);
  check_1d(row_order, "row_order", device, out_features);
  at::Tensor bias_f;
  if (bias.has_value()) {
    check_1d(*bias, "bias", device, out_features);
    bias_f = bias->to(at::kFloat).contiguous();
  }
  const size_t value_bytes = values.element_size() * sparsekit::spmm_cuda::kVec;
  const size_t index_bytes = col_idx.element_size() * sparsekit::spmm_cuda::kVec;
  TORCH_CHECK_VALUE(reinterpret_cast<uintptr_t>(values.data_ptr()) % value_bytes == 0 &&
                        reinterpret_cast<uintptr_t>(col_idx.data_ptr()) % index_bytes == 0,
                    "sparsekit: values / col_idx must be aligned for vector loads (pack with pack_gpu_csr)");

  const c10::cuda::CUDAGuard guard(device);
  at::Tensor y = at::empty({x.size(0), out_features}, x.options());
  const cudaError_t err = sparsekit::spmm_cuda::csr_linear(
      dtype, col_idx.scalar_type() == at::kShort ? IndexType::kInt16 : IndexType::kInt32, x.size(0), in_features,
      out_features, nnz, x.data_ptr(), x.stride(0), row_ptr.data_ptr<int32_t>(), col_idx.data_ptr(), values.data_ptr(),
      row_order.data_ptr<int32_t>(), bias.has_value() ? bias_f.data_ptr<float>() : nullptr, y.data_ptr(), y.stride(0),
      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "sparsekit: CUDA CSR kernel failed: ", cudaGetErrorString(err));
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekit CUDA CSR x dense kernel for Linear layers with few tokens (see csrc/spmm_cuda/spmm_cuda.h)";
  m.def("linear", &linear, "y = x @ W.T + bias for a GPU CSR weight", py::arg("x"), py::arg("row_ptr"),
        py::arg("col_idx"), py::arg("values"), py::arg("row_order"), py::arg("in_features"), py::arg("out_features"),
        py::arg("bias") = py::none());
  m.def("subwarp", &sparsekit::spmm_cuda::choose_subwarp, "subwarp width the kernel uses for (nnz, out_features)");
#ifdef TORCH_VERSION
  m.attr("TORCH_VERSION") = TORCH_VERSION;
#endif
}
