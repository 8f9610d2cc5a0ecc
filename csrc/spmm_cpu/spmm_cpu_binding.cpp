// pybind11 binding of the CPU sparse Linear kernels: the module sparsekit._C_cpu.
//
// The ops themselves (sparsekit::csr_linear, sparsekit::bsr_linear) are declared once, in Python
// (sparsekit/kernels/cpu.py, torch.library.custom_op + register_fake); their CPU implementation calls
// linear() below. Every call checks everything the kernels index with before touching memory -- dtypes,
// layouts, devices and sizes here, the contents of ptr / col in sparsekit::spmm_cpu::validate_weight -- so
// no tensors passed to the ops can make them read out of bounds; errors are ValueError / TypeError.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#if __has_include(<torch/headeronly/version.h>)
#include <torch/headeronly/version.h>
#elif __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "spmm_cpu.h"

namespace {

using sparsekit::spmm_cpu::Isa;

Isa parse_isa(const std::string& name) {
  if (name == "avx512") return Isa::kAvx512;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "scalar") return Isa::kScalar;
  TORCH_CHECK_VALUE(false, "sparsekit: unknown ISA '", name, "' (expected avx512, avx2 or scalar)");
}

void check_index_tensor(const at::Tensor& t, const char* name, int64_t numel) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "sparsekit: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, "sparsekit: ", name, " must be a strided tensor, got layout ",
                    t.layout());
  TORCH_CHECK_VALUE(t.dim() == 1, "sparsekit: ", name, " must be 1-D, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), "sparsekit: ", name, " must be contiguous, got stride ", t.strides());
  if (numel >= 0) {
    TORCH_CHECK_VALUE(t.numel() == numel, "sparsekit: ", name, " has ", t.numel(), " elements, expected ", numel);
  }
}

// The packed weight (ptr / col / val) as a GroupedWeight after checking everything the kernels index with:
// dtypes, layouts, devices, sizes, and (validate_weight) the contents of ptr and col.
sparsekit::spmm_cpu::GroupedWeight checked_weight(const at::Tensor& ptr, const at::Tensor& col,
                                                  const at::Tensor& val, int64_t in_features,
                                                  int64_t out_features, int64_t group_rows, int64_t chunk,
                                                  Isa isa) {
  TORCH_CHECK_VALUE(group_rows == 1 || group_rows == 2 || group_rows == 4,
                    "sparsekit: group_rows must be 1, 2 or 4, got ", group_rows);
  TORCH_CHECK_VALUE(chunk >= 1 && chunk <= 256, "sparsekit: chunk must be in [1, 256], got ", chunk);
  TORCH_CHECK_VALUE(in_features >= 0 && out_features >= 0 && in_features < (int64_t{1} << 31) &&
                        out_features < (int64_t{1} << 31),
                    "sparsekit: in_features / out_features must be in [0, 2**31-1], got ", in_features, " / ",
                    out_features);
  sparsekit::spmm_cpu::GroupedWeight w;
  w.out = out_features;
  w.in = in_features;
  w.rows = group_rows;
  w.ngroups = (out_features + group_rows - 1) / group_rows;
  w.chunk = chunk;
  w.nchunks = (in_features + chunk - 1) / chunk;
  TORCH_CHECK_TYPE(ptr.scalar_type() == at::kInt, "sparsekit: ptr must be int32, got ", ptr.scalar_type());
  check_index_tensor(ptr, "ptr", w.nchunks * w.ngroups + 1);  // < 2**62 + 1: no overflow
  TORCH_CHECK_TYPE(col.scalar_type() == at::kByte, "sparsekit: col must be uint8, got ", col.scalar_type());
  check_index_tensor(col, "col", -1);
  const int64_t nent = col.numel();
  TORCH_CHECK_TYPE(val.scalar_type() == at::kFloat, "sparsekit: val must be float32, got ", val.scalar_type());
  TORCH_CHECK_VALUE(nent <= INT32_MAX, "sparsekit: col has ", nent, " entries, more than an int32 ptr can address");
  check_index_tensor(val, "val", nent * group_rows);
  w.ptr = ptr.data_ptr<int32_t>();
  w.col = col.data_ptr<uint8_t>();
  w.val = val.data_ptr<float>();
  sparsekit::spmm_cpu::validate_weight(w, nent, isa);
  return w;
}

Isa checked_isa(const std::string& isa_name) {
  const Isa isa = parse_isa(isa_name);
  TORCH_CHECK_VALUE(sparsekit::spmm_cpu::isa_supported(isa), "sparsekit: ISA '", isa_name,
                    "' is not supported by this CPU");
  return isa;
}

// validate_weight alone (benchmarks/op_validation_cost.py times it against the whole op).
void validate_packed(const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val, int64_t in_features,
                     int64_t out_features, int64_t group_rows, int64_t chunk, const std::string& isa_name) {
  checked_weight(ptr, col, val, in_features, out_features, group_rows, chunk, checked_isa(isa_name));
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val,
                  int64_t in_features, int64_t out_features, int64_t group_rows, int64_t chunk,
                  const c10::optional<at::Tensor>& bias, const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, "sparsekit: x must be float32, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sparsekit: x must be a CPU tensor, got ", x.device());
  TORCH_CHECK_VALUE(x.layout() == at::kStrided, "sparsekit: x must be a strided tensor, got ", x.layout());
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == in_features, "sparsekit: x must have shape [M, ", in_features,
                    "], got ", x.sizes());
  const sparsekit::spmm_cpu::GroupedWeight w =
      checked_weight(ptr, col, val, in_features, out_features, group_rows, chunk, isa);

  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    const at::Tensor& b = *bias;
    TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat, "sparsekit: bias must be float32, got ", b.scalar_type());
    check_index_tensor(b, "bias", out_features);
    bias_ptr = b.data_ptr<float>();
  }

  at::Tensor xc = x;
  if (x.stride(1) != 1 || (x.size(0) > 1 && x.stride(0) < in_features)) xc = x.contiguous();
  const int64_t M = xc.size(0);
  const int64_t ldx = M > 1 ? xc.stride(0) : in_features;

  at::Tensor y = at::empty({M, out_features}, x.options());
  if (M == 0 || out_features == 0) return y;

  {
    pybind11::gil_scoped_release no_gil;
    sparsekit::spmm_cpu::grouped_linear(xc.data_ptr<float>(), M, ldx, w, bias_ptr, y.data_ptr<float>(),
                                        out_features, isa);
  }
  return y;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kScalar}) {
    if (sparsekit::spmm_cpu::isa_supported(isa)) out.emplace_back(sparsekit::spmm_cpu::isa_name(isa));
  }
  return out;
}

// How many distinct threads one at::parallel_for over n items actually runs on (the kernels' parallel
// region). Guards against a build without the OpenMP flag, where ATen's header-only parallel_for silently
// runs serially.
int64_t parallel_threads(int64_t n) {
  std::vector<int64_t> owner(static_cast<size_t>(std::max<int64_t>(n, 0)), -1);
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) owner[static_cast<size_t>(i)] = at::get_thread_num();
  });
  std::vector<int64_t> seen;
  for (int64_t o : owner) {
    if (std::find(seen.begin(), seen.end(), o) == seen.end()) seen.push_back(o);
  }
  return static_cast<int64_t>(seen.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekit CPU sparse x dense Linear kernels (see csrc/spmm_cpu/spmm_cpu.h)";
  m.def("linear", &linear, pybind11::arg("x"), pybind11::arg("ptr"), pybind11::arg("col"), pybind11::arg("val"),
        pybind11::arg("in_features"), pybind11::arg("out_features"), pybind11::arg("group_rows"),
        pybind11::arg("chunk"), pybind11::arg("bias"), pybind11::arg("isa"),
        "y = x @ W^T + bias for a packed W (layout: spmm_cpu.h); x float32 [M, in] -> y float32 [M, out].");
  m.def("validate_packed", &validate_packed, pybind11::arg("ptr"), pybind11::arg("col"), pybind11::arg("val"),
        pybind11::arg("in_features"), pybind11::arg("out_features"), pybind11::arg("group_rows"),
        pybind11::arg("chunk"), pybind11::arg("isa"),
        "The per-call index validation of linear() alone (raises ValueError / TypeError on a bad weight).");
  m.def("best_isa", []() { return std::string(sparsekit::spmm_cpu::isa_name(sparsekit::spmm_cpu::best_isa())); },
        "The fastest ISA path this CPU supports: 'avx512', 'avx2' or 'scalar'.");
  m.def("supported_isas", &supported_isas, "ISA paths this CPU supports, best first.");
  m.def("parallel_threads", &parallel_threads, pybind11::arg("n"),
        "Distinct threads that one at::parallel_for over n items ran on (1 means the kernels run serially).");
#ifdef TORCH_VERSION
  m.attr("TORCH_VERSION") = TORCH_VERSION;  // torch the extension was built against
#endif
}
