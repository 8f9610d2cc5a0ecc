// Argument checks shared by the pybind11 bindings of sparsekit._C_cpu (spmm_cpu_binding.cpp,
// encoder_binding.cpp): everything the kernels index with is checked before they touch memory; errors are
// ValueError / TypeError naming the argument.
#pragma once

#include <torch/extension.h>

#include <climits>
#include <string>

#include "spmm_cpu.h"
#include "tensor_checks.h"

namespace sparsekit {
namespace binding {

using spmm_cpu::Isa;

inline Isa parse_isa(const std::string& name) {
  if (name == "avx512") return Isa::kAvx512;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "scalar") return Isa::kScalar;
  TORCH_CHECK_VALUE(false, "sparsekit: unknown ISA '", name, "' (expected avx512, avx2 or scalar)");
}

// The packed weight (ptr / col / val) as a GroupedWeight after checking everything the kernels index with:
// dtypes, layouts, devices, sizes, and (validate_weight) the contents of ptr and col.
inline sparsekit::spmm_cpu::GroupedWeight checked_weight(const at::Tensor& ptr, const at::Tensor& col,
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

inline Isa checked_isa(const std::string& isa_name) {
  const Isa isa = parse_isa(isa_name);
  TORCH_CHECK_VALUE(sparsekit::spmm_cpu::isa_supported(isa), "sparsekit: ISA '", isa_name,
                    "' is not supported by this CPU");
  return isa;
}

}  // namespace binding
}  // namespace sparsekit
