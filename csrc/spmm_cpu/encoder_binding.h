// pybind11 entry points of the fused encoder (encoder_cpu.h) in sparsekit._C_cpu: registered by the module
// definition in spmm_cpu_binding.cpp.
#pragma once

#include <torch/extension.h>

namespace sparsekit {
namespace binding {

/// Adds packed_attention, add_layer_norm, epilogue_rows, glu_rows, encoder_layers, encoder_layers_timed and
/// ENCODER_STAGES to the module.
void register_encoder(pybind11::module_& m);

}  // namespace binding
}  // namespace sparsekit
