// pybind11 binding of the CPU INT8 sparse Linear kernels: the module sparsekit._C_cpu_int8.
//
// The op itself (sparsekit::int8_b4_linear) is declared once, in Python (sparsekit/kernels/cpu_int8.py,
// torch.library.custom_op + register_fake); its CPU implementation calls linear() below. Every call checks
// everything the kernels index with before touching memory -- dtypes, layouts, devices and sizes here, the
// contents of ptr / col / val in sparsekit::spmm_cpu_int8::validate_weight -- so no tensors passed to the op can
// make it read out of bounds; errors are ValueError / TypeError.
#include <torch/extension.h>
#if __has_include(<torch/headeronly/version.h>)
#include <torch/headeronly/version.h>
#elif __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#include <climits>
#include <string>
#include <tuple>
#include <vector>

#include "spmm_cpu_int8.h"
#include "tensor_checks.h"

namespace {

namespace k = sparsekit::spmm_cpu_int8;
using k::Isa;

constexpr Isa kAllIsas[] = {Isa::kAvx512Vnni, Isa::kAvxVnni, Isa::kAvx512Bw, Isa::kAvx2, Isa::kScalar};

Isa parse_isa(const std::string& name) {
  for (Isa isa : kAllIsas) {
    if (name == k::isa_name(isa)) return isa;
  }
  TORCH_CHECK_VALUE(false, "sparsekit: unknown int8 ISA '", name,
                    "' (expected avx512-vnni, avx-vnni, avx512bw, avx2 or scalar)");
}

Isa checked_isa(const std::string& name) {
  const Isa isa = parse_isa(name);
  TORCH_CHECK_VALUE(k::isa_supported(isa), "sparsekit: int8 ISA '", name, "' is not supported by this CPU",
                    k::isa_compiled(isa) ? "" : " (not compiled into this build)");
  return isa;
}

// The torch name of a dtype ("int16", not ATen's "Short"), for messages.
const char* torch_name(at::ScalarType t) {
  switch (t) {
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kLong: return "torch.int64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    default: return c10::toString(t);
  }
}

void check_vector(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t numel) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, "sparsekit: ", name, " must be ", torch_name(dtype), ", got ",
                   torch_name(t.scalar_type()));
  sparsekit::binding::check_index_tensor(t, name, numel);
}

// The packed weight as a B4Weight after checking everything the kernels index with.
k::B4Weight checked_weight(const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val,
                           const at::Tensor& scale, const at::Tensor& wsum, int64_t in_features,
                           int64_t out_features, Isa isa) {
  TORCH_CHECK_VALUE(in_features >= 0 && in_features <= k::kMaxInFeatures,
                    "sparsekit: int8 kernels need in_features in [0, ", k::kMaxInFeatures, "], got ", in_features);
  TORCH_CHECK_VALUE(out_features >= 0 && out_features <= INT32_MAX - 1,
                    "sparsekit: out_features must be in [0, 2**31-2], got ", out_features);
  k::B4Weight w;
  w.out = out_features;
  w.in = in_features;
  w.nkb = (in_features + 3) / 4;
  check_vector(ptr, "ptr", at::kInt, out_features + 1);
  check_vector(col, "col", at::kShort, -1);
  w.nblk = col.numel();
  TORCH_CHECK_VALUE(w.nblk <= INT32_MAX / 4, "sparsekit: col has ", w.nblk, " blocks, more than supported");
  check_vector(val, "val", at::kChar, 4 * w.nblk);
  check_vector(scale, "scale", at::kFloat, out_features);
  check_vector(wsum, "wsum", at::kInt, out_features);
  w.ptr = ptr.data_ptr<int32_t>();
  w.col = col.data_ptr<int16_t>();
  w.val = val.data_ptr<int8_t>();
  w.scale = scale.data_ptr<float>();
  w.wsum = wsum.data_ptr<int32_t>();
  k::validate_weight(w, isa);
  return w;
}

at::Tensor checked_x(const at::Tensor& x, int64_t in_features) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, "sparsekit: x must be torch.float32, got ",
                   torch_name(x.scalar_type()));
  TORCH_CHECK_VALUE(x.device().is_cpu(), "sparsekit: x must be a CPU tensor, got ", x.device());
  TORCH_CHECK_VALUE(x.layout() == at::kStrided, "sparsekit: x must be a strided tensor, got ", x.layout());
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == in_features, "sparsekit: x must have shape [M, ", in_features,
                    "], got ", x.sizes());
  if (x.stride(1) != 1 || (x.size(0) > 1 && x.stride(0) < in_features)) return x.contiguous();
  return x;
}

int64_t row_stride(const at::Tensor& x, int64_t in_features) { return x.size(0) > 1 ? x.stride(0) : in_features; }

void validate_packed(const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val, const at::Tensor& scale,
                     const at::Tensor& wsum, int64_t in_features, int64_t out_features, const std::string& isa_name) {
  checked_weight(ptr, col, val, scale, wsum, in_features, out_features, checked_isa(isa_name));
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& col, const at::Tensor& val,
                  const at::Tensor& scale, const at::Tensor& wsum, int64_t in_features, int64_t out_features,
                  const c10::optional<at::Tensor>& bias, const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  const at::Tensor xc = checked_x(x, in_features);
  const k::B4Weight w = checked_weight(ptr, col, val, scale, wsum, in_features, out_features, isa);
  k::Output out;
  if (bias.has_value()) {
    check_vector(*bias, "bias", at::kFloat, out_features);
    out.bias = bias->data_ptr<float>();
  }
  const int64_t M = xc.size(0);
  at::Tensor y = at::empty({M, out_features}, x.options());
  if (M == 0 || out_features == 0) return y;
  out.kind = k::Output::Kind::kDequantBias;
  out.y = y.data_ptr<float>();
  out.ldy = out_features;
  {
    pybind11::gil_scoped_release no_gil;
    k::b4_linear(xc.data_ptr<float>(), M, row_stride(xc, in_features), w, out, isa);
  }
  return y;
}

// The exact int32 accumulators and the per-token activation scales (tests / debugging).
std::tuple<at::Tensor, at::Tensor> accumulators(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& col,
                                                const at::Tensor& val, const at::Tensor& scale,
                                                const at::Tensor& wsum, int64_t in_features, int64_t out_features,
                                                const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  const at::Tensor xc = checked_x(x, in_features);
  const k::B4Weight w = checked_weight(ptr, col, val, scale, wsum, in_features, out_features, isa);
  const int64_t M = xc.size(0);
  at::Tensor acc = at::empty({M, out_features}, x.options().dtype(at::kInt));
  at::Tensor xs = at::empty({M}, x.options());
  if (M == 0) return {acc, xs};
  k::Output out;
  out.kind = k::Output::Kind::kInt32;
  out.acc = acc.data_ptr<int32_t>();
  out.ldy = out_features;
  out.x_scale = xs.data_ptr<float>();
  {
    pybind11::gil_scoped_release no_gil;
    k::b4_linear(xc.data_ptr<float>(), M, row_stride(xc, in_features), w, out, isa);
  }
  return {acc, xs};
}

std::vector<std::string> isas(bool supported_only) {
  std::vector<std::string> out;
  for (Isa isa : kAllIsas) {
    if (supported_only ? k::isa_supported(isa) : k::isa_compiled(isa)) out.emplace_back(k::isa_name(isa));
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekit CPU INT8 1x4-block sparse x dense Linear kernels (see csrc/spmm_cpu_int8/spmm_cpu_int8.h)";
  m.def("linear", &linear, pybind11::arg("x"), pybind11::arg("ptr"), pybind11::arg("col"), pybind11::arg("val"),
        pybind11::arg("scale"), pybind11::arg("wsum"), pybind11::arg("in_features"), pybind11::arg("out_features"),
        pybind11::arg("bias"), pybind11::arg("isa"),
        "y = dequant(quant(x) @ Q^T) + bias for a packed int8 1x4-block W; x float32 [M, in] -> y float32 [M, out].");
  m.def("accumulators", &accumulators, pybind11::arg("x"), pybind11::arg("ptr"), pybind11::arg("col"),
        pybind11::arg("val"), pybind11::arg("scale"), pybind11::arg("wsum"), pybind11::arg("in_features"),
        pybind11::arg("out_features"), pybind11::arg("isa"),
        "(acc int32 [M, out], x_scale float32 [M]): the exact int32 accumulators and per-token activation scales.");
  m.def("validate_packed", &validate_packed, pybind11::arg("ptr"), pybind11::arg("col"), pybind11::arg("val"),
        pybind11::arg("scale"), pybind11::arg("wsum"), pybind11::arg("in_features"), pybind11::arg("out_features"),
        pybind11::arg("isa"),
        "The per-call validation of linear() alone (raises ValueError / TypeError on a bad weight).");
  m.def("best_isa", []() { return std::string(k::isa_name(k::best_isa())); },
        "The fastest int8 path this CPU supports.");
  m.def("supported_isas", []() { return isas(true); }, "int8 paths this CPU supports, best first.");
  m.def("compiled_isas", []() { return isas(false); }, "int8 paths compiled into this build, best first.");
  m.attr("MAX_IN_FEATURES") = k::kMaxInFeatures;
#ifdef TORCH_VERSION
  m.attr("TORCH_VERSION") = TORCH_VERSION;  // torch the extension was built against
#endif
}
