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

#include "binding_checks.h"
#include "encoder_binding.h"
#include "encoder_cpu.h"
#include "spmm_cpu.h"

namespace {

using sparsekit::binding::check_index_tensor;
using sparsekit::binding::checked_isa;
using sparsekit::binding::checked_weight;
using sparsekit::spmm_cpu::Isa;

// validate_weight alone (benchmarks/op_validation_cost.py times it against the whole op).
void validate_packed(const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val, int64_t in_features,
                     int64_t out_features, int64_t group_rows, int64_t chunk, const std::string& isa_name) {
  checked_weight(ptr, col, val, in_features, out_features, group_rows, chunk, checked_isa(isa_name));
}

// x as the kernels read it: float32 [M, in] on the CPU with unit column stride (copied when it is not).
at::Tensor checked_x(const at::Tensor& x, int64_t in_features) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, "sparsekit: x must be float32, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sparsekit: x must be a CPU tensor, got ", x.device());
  TORCH_CHECK_VALUE(x.layout() == at::kStrided, "sparsekit: x must be a strided tensor, got ", x.layout());
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == in_features, "sparsekit: x must have shape [M, ", in_features,
                    "], got ", x.sizes());
  if (x.stride(1) != 1 || (x.size(0) > 1 && x.stride(0) < in_features)) return x.contiguous();
  return x;
}

const float* checked_bias(const c10::optional<at::Tensor>& bias, int64_t out_features, const char* what) {
  if (!bias.has_value()) return nullptr;
  const at::Tensor& b = *bias;
  TORCH_CHECK_TYPE(b.scalar_type() == at::kFloat, "sparsekit: ", what, " must be float32, got ", b.scalar_type());
  check_index_tensor(b, what, out_features);
  return b.data_ptr<float>();
}

sparsekit::spmm_cpu::Activation checked_act(int64_t act) {
  TORCH_CHECK_VALUE(act >= 0 && act <= 3, "sparsekit: act must be 0 (none), 1 (gelu), 2 (gelu_tanh) or 3 (relu), got ",
                    act);
  return static_cast<sparsekit::spmm_cpu::Activation>(act);
}

// The output epilogue (spmm_cpu.h): act, then + residual, a float32 [M, out_features] CPU tensor (kept alive in
// *holder) or none.
sparsekit::spmm_cpu::Epilogue checked_epilogue(int64_t act, const c10::optional<at::Tensor>& residual, int64_t M,
                                               int64_t out_features, at::Tensor* holder) {
  sparsekit::spmm_cpu::Epilogue ep;
  ep.act = checked_act(act);
  ep.ldr = out_features;
  if (!residual.has_value()) return ep;
  *holder = residual->contiguous();
  const at::Tensor& rc = *holder;
  TORCH_CHECK_TYPE(rc.scalar_type() == at::kFloat, "sparsekit: residual must be float32, got ", rc.scalar_type());
  TORCH_CHECK_VALUE(rc.device().is_cpu() && rc.dim() == 2 && rc.size(0) == M && rc.size(1) == out_features,
                    "sparsekit: residual must be a CPU tensor of shape [", M, ", ", out_features, "], got ",
                    rc.sizes());
  ep.residual = rc.data_ptr<float>();
  return ep;
}

// The row stride the kernels read x with (checked_x's x; one row: in_features).
int64_t row_stride(const at::Tensor& xc, int64_t in_features) {
  return xc.size(0) > 1 ? xc.stride(0) : in_features;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val,
                  int64_t in_features, int64_t out_features, int64_t group_rows, int64_t chunk,
                  const c10::optional<at::Tensor>& bias, const std::string& isa_name, int64_t act,
                  const c10::optional<at::Tensor>& residual) {
  const Isa isa = checked_isa(isa_name);
  const at::Tensor xc = checked_x(x, in_features);
  const sparsekit::spmm_cpu::GroupedWeight w =
      checked_weight(ptr, col, val, in_features, out_features, group_rows, chunk, isa);
  const float* bias_ptr = checked_bias(bias, out_features, "bias");
  const int64_t M = xc.size(0);
  at::Tensor rc;
  const sparsekit::spmm_cpu::Epilogue ep = checked_epilogue(act, residual, M, out_features, &rc);

  at::Tensor y = at::empty({M, out_features}, x.options());
  if (M == 0 || out_features == 0) return y;
  {
    pybind11::gil_scoped_release no_gil;
    sparsekit::spmm_cpu::grouped_linear(xc.data_ptr<float>(), M, row_stride(xc, in_features), w, bias_ptr,
                                        y.data_ptr<float>(), out_features, isa, ep);
  }
  return y;
}

// encoder_cpu::sparse_ffn, the fused encoder's FFN, on two packed weights: Wi [ffn_features (2 ffn_features with
// glu), in] and Wf [out, ffn_features].
at::Tensor ffn(const at::Tensor& x, const at::Tensor& ptr_i, const at::Tensor& col_i, const at::Tensor& val_i,
               int64_t in_features, int64_t ffn_features, int64_t group_rows_i, int64_t chunk_i,
               const c10::optional<at::Tensor>& bias_i, int64_t act, bool glu, const at::Tensor& ptr_f,
               const at::Tensor& col_f, const at::Tensor& val_f, int64_t out_features, int64_t group_rows_f,
               int64_t chunk_f, const c10::optional<at::Tensor>& bias_f, const c10::optional<at::Tensor>& residual,
               const std::string& isa_name) {
  namespace sc = sparsekit::spmm_cpu;
  const Isa isa = checked_isa(isa_name);
  const at::Tensor xc = checked_x(x, in_features);
  TORCH_CHECK_VALUE(ffn_features >= 0 && ffn_features <= INT32_MAX / 2, "sparsekit: ffn_features must be in [0, "
                    "2**30), got ", ffn_features);
  const int64_t rows_i = glu ? 2 * ffn_features : ffn_features;
  const sc::GroupedWeight wi = checked_weight(ptr_i, col_i, val_i, in_features, rows_i, group_rows_i, chunk_i, isa);
  const sc::GroupedWeight wf =
      checked_weight(ptr_f, col_f, val_f, ffn_features, out_features, group_rows_f, chunk_f, isa);
  const float* bi = checked_bias(bias_i, rows_i, "bias_i");
  const float* bf = checked_bias(bias_f, out_features, "bias_f");
  const int64_t M = xc.size(0);
  const sc::Activation a = checked_act(act);  // the FFN-in's; the output epilogue adds the residual only
  at::Tensor rc;
  const sc::Epilogue ep = checked_epilogue(0, residual, M, out_features, &rc);

  at::Tensor y = at::empty({M, out_features}, x.options());
  if (M == 0 || out_features == 0) return y;
  {
    pybind11::gil_scoped_release no_gil;
    sparsekit::encoder_cpu::sparse_ffn(xc.data_ptr<float>(), M, row_stride(xc, in_features), wi, bi, a, glu, wf, bf,
                                       y.data_ptr<float>(), out_features, isa, ep);
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
        pybind11::arg("chunk"), pybind11::arg("bias"), pybind11::arg("isa"), pybind11::arg("act") = 0,
        pybind11::arg("residual") = pybind11::none(),
        "y = act(x @ W^T + bias) + residual for a packed W (layout: spmm_cpu.h); x float32 [M, in] -> y float32 "
        "[M, out]; act: 0 none, 1 gelu (erf), 2 gelu (tanh), 3 relu.");
  m.def("ffn", &ffn, pybind11::arg("x"), pybind11::arg("ptr_i"), pybind11::arg("col_i"), pybind11::arg("val_i"),
        pybind11::arg("in_features"), pybind11::arg("ffn_features"), pybind11::arg("group_rows_i"),
        pybind11::arg("chunk_i"), pybind11::arg("bias_i"), pybind11::arg("act"), pybind11::arg("glu"),
        pybind11::arg("ptr_f"),
        pybind11::arg("col_f"), pybind11::arg("val_f"), pybind11::arg("out_features"), pybind11::arg("group_rows_f"),
        pybind11::arg("chunk_f"), pybind11::arg("bias_f"), pybind11::arg("residual"), pybind11::arg("isa"),
        "y = h @ Wf^T + bias_f + residual, h = act(x @ Wi^T + bias_i) (glu: act(a) * gate of a = x @ Wi^T + bias_i) "
        "for two packed weights, as the fused encoder runs its FFN (encoder_cpu.h sparse_ffn: no row-major "
        "intermediate where it applies); bit for bit the unfused linear() calls.");
  m.def("validate_packed", &validate_packed, pybind11::arg("ptr"), pybind11::arg("col"), pybind11::arg("val"),
        pybind11::arg("in_features"), pybind11::arg("out_features"), pybind11::arg("group_rows"),
        pybind11::arg("chunk"), pybind11::arg("isa"),
        "The per-call index validation of linear() alone (raises ValueError / TypeError on a bad weight).");
  m.def("best_isa", []() { return std::string(sparsekit::spmm_cpu::isa_name(sparsekit::spmm_cpu::best_isa())); },
        "The fastest ISA path this CPU supports: 'avx512', 'avx2' or 'scalar'.");
  m.def("supported_isas", &supported_isas, "ISA paths this CPU supports, best first.");
  m.def("parallel_threads", &parallel_threads, pybind11::arg("n"),
        "Distinct threads that one at::parallel_for over n items ran on (1 means the kernels run serially).");
  sparsekit::binding::register_encoder(m);
#ifdef TORCH_VERSION
  m.attr("TORCH_VERSION") = TORCH_VERSION;  // torch the extension was built against
#endif
}
