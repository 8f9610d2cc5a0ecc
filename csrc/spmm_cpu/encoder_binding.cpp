// pybind11 entry points of the fused encoder (encoder_cpu.h) and the layer driver encoder_layers().
//
// encoder_layers() runs a stack of encoder layers (encoder_cpu.h: post-LayerNorm, or pre-LayerNorm with rotary
// positions, GLU FFN and sliding windows) over packed tokens in one call (the op sparsekit::encoder_layers of
// sparsekit/kernels/encoder.py). Its arguments are flat lists, per layer in order:
//   tensors (kTensors per layer): for each matrix of (qkv, attn_out, ffn_in, ffn_out) six tensors --
//            dense:  weight float32 [out, in] (contiguous), bias float32 [out], four empty tensors;
//            sparse: ptr int32, col uint8, val float32 (packed layout of spmm_cpu.h), bias float32 [out], two
//                    empty;
//            int8:   ptr int32, col int16, val int8, bias float32 [out], scale float32 [out], wsum int32 [out]
//                    (1x4-block layout of spmm_cpu_int8.h; activations quantised per token, the epilogue applied
//                    after dequantising) --
//            then LayerNorm 1 weight, bias and LayerNorm 2 weight, bias (float32 [hidden]; LayerNorm 1's two
//            empty when norm is 2), then DeBERTa's posK^T and posQ^T (float32 [heads][dq][rel_cols], each empty
//            when the layer lacks that term).
//   meta (kMeta per layer): heads, dq, dv, act, norm (0 post-LayerNorm, 1 pre-LayerNorm, 2 pre-LayerNorm without
//            LayerNorm 1), glu (0 / 1: ffn_in stacks FFN-in on gate rows), window (-1: every key; w >= 0: keys
//            with |i - j| <= w), rotary (-1: none; t: rotary tables rope[2 t] (cos), rope[2 t + 1] (sin), each
//            float32 [N, dq]), relative (0: none; bit 1: c2p, bit 2: p2c, DeBERTa), rel_cols, then per matrix:
//            kind (0 dense, 1 sparse, 2 int8), in, out, group_rows, chunk (group_rows / chunk: sparse only).
//   scalars (kScalars per layer): attention scale, LayerNorm 1 eps, LayerNorm 2 eps.
//   rope: the rotary tables the layers name (cos / sin of each packed token's position), or none.
//   rel_index: int32 [2 c + 1], the posK / posQ column of each distance i - j in [-c, c] (at i - j + c), for the
//            layers with relative terms; empty when none has them.
// Every tensor, size and packed index is checked before any kernel runs (ValueError / TypeError).
// encoder_layers_timed() runs the same and also returns the wall time of each stage of each layer (kStageNames),
// for profiles that time the pieces where they run, with the caches as the forward leaves them.
#include "encoder_binding.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "binding_checks.h"
#include "encoder_cpu.h"
#include "spmm_cpu.h"
#include "spmm_cpu_int8.h"

namespace sparsekit {
namespace binding {
namespace {

using spmm_cpu::Activation;
using spmm_cpu::Epilogue;

constexpr int64_t kMatrices = 4;
constexpr int64_t kPerMatrix = 6;
constexpr int64_t kTensors = kMatrices * kPerMatrix + 4 + 2;
constexpr int64_t kHeadMeta = 10;  // heads, dq, dv, act, norm, glu, window, rotary, relative, rel_cols
constexpr int64_t kMeta = kHeadMeta + kMatrices * 5;
enum Norm : int64_t { kPostNorm = 0, kPreNorm = 1, kPreNormNoFirst = 2 };
constexpr int64_t kScalars = 3;
const char* const kMatrixNames[kMatrices] = {"qkv", "attn_out", "ffn_in", "ffn_out"};

void check_float_vector(const at::Tensor& t, const std::string& what, int64_t n) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat, "sparsekit: ", what, " must be float32, got ", t.scalar_type());
  check_index_tensor(t, what.c_str(), n);
}

void check_activations(const at::Tensor& x, const char* what, int64_t cols) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, "sparsekit: ", what, " must be float32, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.device().is_cpu() && x.layout() == at::kStrided, "sparsekit: ", what,
                    " must be a strided CPU tensor");
  TORCH_CHECK_VALUE(x.dim() == 2 && (cols < 0 || x.size(1) == cols), "sparsekit: ", what, " must have shape [N, ",
                    cols, "], got ", x.sizes());
}

// cu_seqlens: int64 [nseq + 1], 0 = cu[0] <= cu[1] <= ... <= cu[nseq] = N.
const int64_t* checked_cu_seqlens(const at::Tensor& cu, int64_t N) {
  TORCH_CHECK_TYPE(cu.scalar_type() == at::kLong, "sparsekit: cu_seqlens must be int64, got ", cu.scalar_type());
  check_index_tensor(cu, "cu_seqlens", -1);
  TORCH_CHECK_VALUE(cu.numel() >= 1, "sparsekit: cu_seqlens needs at least one element (0)");
  const int64_t* c = cu.data_ptr<int64_t>();
  const int64_t nseq = cu.numel() - 1;
  TORCH_CHECK_VALUE(c[0] == 0, "sparsekit: cu_seqlens[0] must be 0, got ", c[0]);
  for (int64_t s = 0; s < nseq; ++s) {
    TORCH_CHECK_VALUE(c[s + 1] >= c[s], "sparsekit: cu_seqlens must be non-decreasing, got cu_seqlens[", s, "] = ",
                      c[s], " > cu_seqlens[", s + 1, "] = ", c[s + 1]);
  }
  TORCH_CHECK_VALUE(c[nseq] == N, "sparsekit: cu_seqlens[-1] must be the number of packed tokens ", N, ", got ",
                    c[nseq]);
  return c;
}

encoder_cpu::AttentionShape attention_shape(int64_t heads, int64_t dq, int64_t dv, double scale) {
  TORCH_CHECK_VALUE(heads >= 0 && dq >= 1 && dv >= 1, "sparsekit: heads >= 0, dq >= 1 and dv >= 1 are needed, got ",
                    heads, ", ", dq, ", ", dv);
  encoder_cpu::AttentionShape a;
  a.heads = heads;
  a.dq = dq;
  a.dv = dv;
  a.q_off = 0;
  a.k_off = heads * dq;
  a.v_off = 2 * heads * dq;
  a.scale = static_cast<float>(scale);
  return a;
}

at::Tensor packed_attention(const at::Tensor& qkv, const at::Tensor& cu_seqlens, int64_t heads, int64_t dq,
                            int64_t dv, double scale, int64_t window, const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  encoder_cpu::AttentionShape a = attention_shape(heads, dq, dv, scale);
  TORCH_CHECK_VALUE(window >= -1, "sparsekit: window must be -1 (every key) or >= 0, got ", window);
  a.window = window;
  check_activations(qkv, "qkv", heads * (2 * dq + dv));
  const at::Tensor q = qkv.contiguous();
  const int64_t* cu = checked_cu_seqlens(cu_seqlens, q.size(0));
  at::Tensor ctx = at::zeros({q.size(0), heads * dv}, q.options());
  pybind11::gil_scoped_release no_gil;
  encoder_cpu::packed_attention(q.data_ptr<float>(), q.size(1), cu, cu_seqlens.numel() - 1, a, ctx.data_ptr<float>(),
                                heads * dv, isa);
  return ctx;
}

at::Tensor add_layer_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual, const at::Tensor& weight,
                          const at::Tensor& bias, double eps, const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  check_activations(x, "x", -1);
  const int64_t n = x.size(1);
  TORCH_CHECK_VALUE(n >= 1, "sparsekit: layer_norm needs at least one feature");
  check_float_vector(weight, "weight", n);
  check_float_vector(bias, "bias", n);
  const at::Tensor xc = x.contiguous();
  at::Tensor rc;
  if (residual.has_value()) {
    check_activations(*residual, "residual", n);
    TORCH_CHECK_VALUE(residual->size(0) == x.size(0), "sparsekit: residual must have ", x.size(0), " rows");
    rc = residual->contiguous();
  }
  at::Tensor y = at::empty_like(xc);
  pybind11::gil_scoped_release no_gil;
  encoder_cpu::add_layer_norm(xc.data_ptr<float>(), n, rc.defined() ? rc.data_ptr<float>() : nullptr, n,
                              weight.data_ptr<float>(), bias.data_ptr<float>(), static_cast<float>(eps),
                              y.data_ptr<float>(), n, xc.size(0), n, isa);
  return y;
}

spmm_cpu_int8::Isa parse_int8_isa(const std::string& name) {
  using I = spmm_cpu_int8::Isa;
  const I isa = name == "avx512-vnni" ? I::kAvx512Vnni
                : name == "avx-vnni"  ? I::kAvxVnni
                : name == "avx512bw"  ? I::kAvx512Bw
                : name == "avx2"      ? I::kAvx2
                                      : I::kScalar;
  TORCH_CHECK_VALUE(name == spmm_cpu_int8::isa_name(isa), "sparsekit: unknown int8 ISA '", name,
                    "' (expected avx512-vnni, avx-vnni, avx512bw, avx2 or scalar)");
  TORCH_CHECK_VALUE(spmm_cpu_int8::isa_supported(isa), "sparsekit: int8 ISA '", name, "' is not supported here");
  return isa;
}

// The fp32 epilogue of an int8 Linear, run by b4_linear's workers on each block of y they finish (Output::post).
struct Int8Epilogue {
  Epilogue ep;
  Isa isa;
  static void run(void* ctx, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t o0, int64_t n) {
    const Int8Epilogue& self = *static_cast<const Int8Epilogue*>(ctx);
    Epilogue block = self.ep;
    if (block.residual != nullptr) block.residual += m0 * block.ldr + o0;
    encoder_cpu::epilogue_block(y + m0 * ldy + o0, ldy, m1 - m0, n, block, self.isa);
  }
};

// One Linear of a layer: dense (ATen addmm + epilogue_rows), packed sparse fp32 (grouped_linear, epilogue fused in
// the store) or int8 1x4 blocks (b4_linear with bias, the epilogue on each block as it is written).
struct Matrix {
  int kind = 0;  // 0 dense, 1 sparse fp32, 2 int8
  int64_t in = 0, out = 0;
  at::Tensor weight, bias;  // dense weight [out, in]; bias [out]
  spmm_cpu::GroupedWeight packed;
  spmm_cpu_int8::B4Weight packed8;

  void run(const float* x, int64_t M, float* y, const Epilogue& ep, Isa isa, spmm_cpu_int8::Isa isa8) const {
    if (M == 0 || out == 0) return;
    if (kind == 1) {
      spmm_cpu::grouped_linear(x, M, in, packed, bias.data_ptr<float>(), y, out, isa, ep);
      return;
    }
    if (kind == 2) {
      spmm_cpu_int8::Output o;
      o.y = y;
      o.ldy = out;
      o.bias = bias.data_ptr<float>();
      Int8Epilogue post{ep, isa};
      if (ep.act != Activation::kNone || ep.residual != nullptr) {
        o.post = &Int8Epilogue::run;
        o.post_ctx = &post;
      }
      spmm_cpu_int8::b4_linear(x, M, in, packed8, o, isa8);
      return;
    }
    at::Tensor yt = at::from_blob(y, {M, out}, at::TensorOptions().dtype(at::kFloat));
    if (in == 0) {
      yt.copy_(bias.expand({M, out}));
    } else {
      const at::Tensor xt = at::from_blob(const_cast<float*>(x), {M, in}, at::TensorOptions().dtype(at::kFloat));
      at::addmm_out(yt, bias, xt, weight.t());
    }
    encoder_cpu::epilogue_rows(y, out, M, out, ep, isa);
  }
};

struct Layer {
  Matrix m[kMatrices];
  encoder_cpu::AttentionShape attention;
  Activation act = Activation::kNone;
  int64_t norm = kPostNorm;
  bool glu = false;
  int64_t ffn = 0;  // FFN width (GLU: half of ffn_in's rows)
  const float *rope_cos = nullptr, *rope_sin = nullptr;
  const float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;
  float eps1 = 1e-12f, eps2 = 1e-12f;
};

// The int8 weight of one matrix after checking dtypes, sizes and (validate_weight) every index and value.
spmm_cpu_int8::B4Weight checked_int8(const at::Tensor* mt, int64_t in, int64_t out, const std::string& name,
                                     spmm_cpu_int8::Isa isa8) {
  TORCH_CHECK_VALUE(in <= spmm_cpu_int8::kMaxInFeatures, "sparsekit: ", name, " has in_features ", in, " > ",
                    spmm_cpu_int8::kMaxInFeatures);
  const std::pair<at::ScalarType, const char*> want[5] = {
      {at::kInt, "ptr"}, {at::kShort, "col"}, {at::kChar, "val"}, {at::kFloat, "scale"}, {at::kInt, "wsum"}};
  const at::Tensor* got[5] = {&mt[0], &mt[1], &mt[2], &mt[4], &mt[5]};
  for (int k = 0; k < 5; ++k) {
    TORCH_CHECK_TYPE(got[k]->scalar_type() == want[k].first, "sparsekit: ", name, " int8 ", want[k].second,
                     " has dtype ", got[k]->scalar_type());
    check_index_tensor(*got[k], want[k].second, -1);
  }
  spmm_cpu_int8::B4Weight w;
  w.out = out;
  w.in = in;
  w.nkb = (in + 3) / 4;
  w.nblk = mt[1].numel();
  TORCH_CHECK_VALUE(mt[0].numel() == out + 1 && mt[2].numel() == 4 * w.nblk && mt[4].numel() == out &&
                        mt[5].numel() == out,
                    "sparsekit: ", name, " int8 tensors do not match out = ", out, " and ", w.nblk, " blocks");
  w.ptr = mt[0].data_ptr<int32_t>();
  w.col = mt[1].data_ptr<int16_t>();
  w.val = mt[2].data_ptr<int8_t>();
  w.scale = mt[4].data_ptr<float>();
  w.wsum = mt[5].data_ptr<int32_t>();
  spmm_cpu_int8::validate_weight(w, isa8);
  return w;
}

Layer checked_layer(const std::vector<at::Tensor>& t, const std::vector<int64_t>& meta,
                    const std::vector<double>& sc, const std::vector<at::Tensor>& rope, const at::Tensor& rel_index,
                    int64_t l, int64_t N, int64_t hidden, Isa isa, spmm_cpu_int8::Isa isa8) {
  const at::Tensor* lt = t.data() + l * kTensors;
  const int64_t* lm = meta.data() + l * kMeta;
  const std::string where = "sparsekit: layer " + std::to_string(l);
  Layer layer;
  layer.attention = attention_shape(lm[0], lm[1], lm[2], sc[l * kScalars]);
  TORCH_CHECK_VALUE(lm[3] >= 0 && lm[3] <= 3, where, ": act must be 0..3, got ", lm[3]);
  layer.act = static_cast<Activation>(lm[3]);
  TORCH_CHECK_VALUE(lm[4] >= kPostNorm && lm[4] <= kPreNormNoFirst, where, ": norm must be 0..2, got ", lm[4]);
  layer.norm = lm[4];
  TORCH_CHECK_VALUE(lm[5] == 0 || lm[5] == 1, where, ": glu must be 0 or 1, got ", lm[5]);
  layer.glu = lm[5] == 1;
  TORCH_CHECK_VALUE(lm[6] >= -1, where, ": window must be -1 (every key) or >= 0, got ", lm[6]);
  layer.attention.window = lm[6];
  const int64_t H = lm[0], dq = lm[1], dv = lm[2];
  if (lm[7] != -1) {
    TORCH_CHECK_VALUE(lm[7] >= 0 && 2 * lm[7] + 1 < static_cast<int64_t>(rope.size()), where, ": rotary table ",
                      lm[7], " is not among the ", rope.size() / 2, " given");
    TORCH_CHECK_VALUE(dq % 2 == 0, where, ": rotary positions need an even Q·K width per head, got ", dq);
    const at::Tensor* tab = &rope[2 * lm[7]];
    for (int k = 0; k < 2; ++k) {
      TORCH_CHECK_TYPE(tab[k].scalar_type() == at::kFloat, where, ": rotary tables must be float32");
      TORCH_CHECK_VALUE(tab[k].device().is_cpu() && tab[k].is_contiguous() && tab[k].dim() == 2 &&
                            tab[k].size(0) == N && tab[k].size(1) == dq,
                        where, ": rotary tables must be contiguous CPU tensors [", N, ", ", dq, "], got ",
                        tab[k].sizes());
    }
    layer.rope_cos = tab[0].data_ptr<float>();
    layer.rope_sin = tab[1].data_ptr<float>();
  }
  TORCH_CHECK_VALUE(lm[8] >= 0 && lm[8] <= 3, where, ": relative must be 0..3, got ", lm[8]);
  if (lm[8] != 0) {
    const int64_t cols = lm[9];
    TORCH_CHECK_VALUE(cols >= 1, where, ": rel_cols must be >= 1, got ", cols);
    TORCH_CHECK_TYPE(rel_index.scalar_type() == at::kInt, where, ": rel_index must be int32");
    TORCH_CHECK_VALUE(rel_index.device().is_cpu() && rel_index.dim() == 1 && rel_index.is_contiguous() &&
                          rel_index.numel() % 2 == 1,
                      where, ": rel_index must be a contiguous CPU vector of odd length (distances -c .. c), got ",
                      rel_index.sizes());
    const int32_t* ri = rel_index.data_ptr<int32_t>();
    for (int64_t k = 0; k < rel_index.numel(); ++k) {
      TORCH_CHECK_VALUE(ri[k] >= 0 && ri[k] < cols, where, ": rel_index[", k, "] = ", ri[k], " is outside 0 .. ",
                        cols - 1);
    }
    const at::Tensor* pos = lt + kPerMatrix * kMatrices + 4;
    const float** dst[2] = {&layer.attention.pos_key_t, &layer.attention.pos_query_t};
    for (int k = 0; k < 2; ++k) {
      if (!(lm[8] & (1 << k))) continue;
      check_float_vector(pos[k], where + (k == 0 ? " posK" : " posQ"), H * dq * cols);
      *dst[k] = pos[k].data_ptr<float>();
    }
    layer.attention.rel_cols = cols;
    layer.attention.rel_index = ri;
    layer.attention.rel_center = (rel_index.numel() - 1) / 2;
  }
  const int64_t ffn_rows = lm[kHeadMeta + 2 * 5 + 2];  // ffn_in's out
  TORCH_CHECK_VALUE(!layer.glu || ffn_rows % 2 == 0, where, ": a GLU ffn_in needs an even row count, got ",
                    ffn_rows);
  layer.ffn = layer.glu ? ffn_rows / 2 : ffn_rows;
  const int64_t want_in[kMatrices] = {hidden, H * dv, hidden, layer.ffn};
  const int64_t want_out[kMatrices] = {H * (2 * dq + dv), hidden, -1, hidden};
  for (int64_t k = 0; k < kMatrices; ++k) {
    const int64_t* mm = lm + kHeadMeta + 5 * k;
    const std::string name = "layer " + std::to_string(l) + " " + kMatrixNames[k];
    Matrix& mx = layer.m[k];
    TORCH_CHECK_VALUE(mm[0] >= 0 && mm[0] <= 2, "sparsekit: ", name, ": kind must be 0 (dense), 1 (sparse) or 2 "
                      "(int8)");
    mx.kind = static_cast<int>(mm[0]);
    mx.in = mm[1];
    mx.out = mm[2];
    TORCH_CHECK_VALUE(mx.in == want_in[k] && (want_out[k] < 0 || mx.out == want_out[k]) && mx.out >= 0,
                      "sparsekit: ", name, " has shape [", mx.out, ", ", mx.in, "], expected [",
                      want_out[k] < 0 ? mx.out : want_out[k], ", ", want_in[k], "]");
    const at::Tensor* mt = lt + kPerMatrix * k;
    if (mx.kind == 0) {
      TORCH_CHECK_TYPE(mt[0].scalar_type() == at::kFloat, "sparsekit: ", name, " weight must be float32");
      TORCH_CHECK_VALUE(mt[0].device().is_cpu() && mt[0].dim() == 2 && mt[0].size(0) == mx.out &&
                            mt[0].size(1) == mx.in && mt[0].is_contiguous(),
                        "sparsekit: ", name, " weight must be a contiguous CPU tensor [", mx.out, ", ", mx.in,
                        "], got ", mt[0].sizes());
      mx.weight = mt[0];
      mx.bias = mt[1];
    } else if (mx.kind == 1) {
      mx.packed = checked_weight(mt[0], mt[1], mt[2], mx.in, mx.out, mm[3], mm[4], isa);
      mx.bias = mt[3];
    } else {
      mx.packed8 = checked_int8(mt, mx.in, mx.out, name, isa8);
      mx.bias = mt[3];
    }
    check_float_vector(mx.bias, name + " bias", mx.out);
  }
  const at::Tensor* ln = lt + kPerMatrix * kMatrices;
  for (int64_t k = layer.norm == kPreNormNoFirst ? 2 : 0; k < 4; ++k) {
    check_float_vector(ln[k], "layer " + std::to_string(l) + " LayerNorm parameter", hidden);
  }
  if (layer.norm != kPreNormNoFirst) {
    layer.ln1_w = ln[0].data_ptr<float>();
    layer.ln1_b = ln[1].data_ptr<float>();
  }
  layer.ln2_w = ln[2].data_ptr<float>();
  layer.ln2_b = ln[3].data_ptr<float>();
  layer.eps1 = static_cast<float>(sc[l * kScalars + 1]);
  layer.eps2 = static_cast<float>(sc[l * kScalars + 2]);
  return layer;
}

// Grow-only scratch of the calling thread (no allocation per call in the steady state).
float* scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Where a fused forward spends its time, per layer (encoder_layers_timed): wall time of each stage, the pieces of
// one layer in the order they run. The Linear stages include their fused epilogues (bias, activation, residual).
enum Stage : int64_t {
  kStageChecks = 0,  // checked_layer: sizes, dtypes and every packed index of the layer's matrices
  kStageLayerNorm,   // every LayerNorm of the layer
  kStageQkv,         // the packed Q / K / V Linear
  kStageAttention,   // rotary positions (if any) and attention over each sequence
  kStageAttnOut,     // the attention output Linear + residual
  kStageFfn,         // FFN-in + activation (GLU) + FFN-out + residual
  kStages
};
const char* const kStageNames[kStages] = {"checks", "layernorm", "qkv", "attention", "attn_out", "ffn"};

// Adds the time since the last mark to a stage of a layer; does nothing without a buffer (the plain forward).
class StageClock {
 public:
  explicit StageClock(int64_t* ns) : ns_(ns) {
    if (ns_ != nullptr) last_ = Clock::now();
  }
  void mark(int64_t layer, Stage stage) {
    if (ns_ == nullptr) return;
    const Clock::time_point now = Clock::now();
    ns_[layer * kStages + stage] += std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
    last_ = now;
  }

 private:
  using Clock = std::chrono::steady_clock;
  int64_t* ns_;
  Clock::time_point last_;
};

// The layer driver behind encoder_layers / encoder_layers_timed; stage_ns: int64 [nlayers, kStages] or null.
at::Tensor run_layers(const at::Tensor& x, const at::Tensor& cu_seqlens, const std::vector<at::Tensor>& tensors,
                      const std::vector<int64_t>& meta, const std::vector<double>& scalars,
                      const std::vector<at::Tensor>& rope, const at::Tensor& rel_index, const std::string& isa_name,
                      const std::string& int8_isa_name, int64_t* stage_ns) {
  const Isa isa = checked_isa(isa_name);
  const spmm_cpu_int8::Isa isa8 = parse_int8_isa(int8_isa_name);
  check_activations(x, "x", -1);
  const int64_t N = x.size(0), hidden = x.size(1);
  TORCH_CHECK_VALUE(hidden >= 1, "sparsekit: x needs at least one feature");
  const int64_t* cu = checked_cu_seqlens(cu_seqlens, N);
  const int64_t nseq = cu_seqlens.numel() - 1;
  const int64_t nlayers = static_cast<int64_t>(meta.size()) / kMeta;
  TORCH_CHECK_VALUE(static_cast<int64_t>(meta.size()) == nlayers * kMeta &&
                        static_cast<int64_t>(tensors.size()) == nlayers * kTensors &&
                        static_cast<int64_t>(scalars.size()) == nlayers * kScalars,
                    "sparsekit: encoder_layers needs ", kTensors, " tensors, ", kMeta, " ints and ", kScalars,
                    " floats per layer; got ", tensors.size(), ", ", meta.size(), ", ", scalars.size());
  StageClock clock(stage_ns);
  // The layers are checked on torch's threads (the value scans of int8 weights were 3% of an int8 forward); an
  // error is rethrown here by at::parallel_for. Timed profiles count the whole check under layer 0.
  std::vector<Layer> layers(static_cast<size_t>(nlayers));
  at::parallel_for(0, nlayers, 1, [&](int64_t b, int64_t e) {
    for (int64_t l = b; l < e; ++l) {
      layers[static_cast<size_t>(l)] = checked_layer(tensors, meta, scalars, rope, rel_index, l, N, hidden, isa, isa8);
    }
  });
  if (nlayers > 0) clock.mark(0, kStageChecks);

  at::Tensor y = x.contiguous().clone();
  if (N == 0) return y;
  thread_local std::vector<float> qkv_buf, ctx_buf, h_buf, u_buf, a_buf, g_buf;
  pybind11::gil_scoped_release no_gil;
  float* xy = y.data_ptr<float>();  // the layer input, then (in place) its output
  for (int64_t l = 0; l < nlayers; ++l) {
    const Layer& L = layers[static_cast<size_t>(l)];
    const encoder_cpu::AttentionShape& a = L.attention;
    const int64_t nqkv = L.m[0].out, nctx = a.heads * a.dv, nu = L.m[2].out;
    float* qkv = scratch(qkv_buf, static_cast<size_t>(N * std::max<int64_t>(nqkv, 1)));
    float* ctx = scratch(ctx_buf, static_cast<size_t>(N * std::max<int64_t>(nctx, 1)));
    float* h = scratch(h_buf, static_cast<size_t>(N * hidden));
    float* u = scratch(u_buf, static_cast<size_t>(N * std::max<int64_t>(nu, 1)));
    const bool pre = L.norm != kPostNorm;
    float* normed = pre ? scratch(a_buf, static_cast<size_t>(N * hidden)) : nullptr;
    clock.mark(l, kStageChecks);  // the scratch buffers' growth: first calls only
    // Attention: qkv from x (post-LN), LayerNorm1(x) (pre-LN) or x (pre-LN, no LayerNorm 1); h = O(ctx) + x.
    const float* attn_in = xy;
    if (L.norm == kPreNorm) {
      encoder_cpu::add_layer_norm(xy, hidden, nullptr, 0, L.ln1_w, L.ln1_b, L.eps1, normed, hidden, N, hidden, isa);
      attn_in = normed;
      clock.mark(l, kStageLayerNorm);
    }
    L.m[0].run(attn_in, N, qkv, Epilogue(), isa, isa8);
    clock.mark(l, kStageQkv);
    if (L.rope_cos != nullptr) encoder_cpu::rotary_rows(qkv, nqkv, N, a, L.rope_cos, L.rope_sin, isa);
    encoder_cpu::packed_attention(qkv, nqkv, cu, nseq, a, ctx, nctx, isa);
    clock.mark(l, kStageAttention);
    Epilogue residual_x;
    residual_x.residual = xy;
    residual_x.ldr = hidden;
    L.m[1].run(ctx, N, h, residual_x, isa, isa8);  // no heads left (nctx == 0): bias + x
    clock.mark(l, kStageAttnOut);
    if (!pre) encoder_cpu::add_layer_norm(h, hidden, nullptr, 0, L.ln1_w, L.ln1_b, L.eps1, h, hidden, N, hidden, isa);
    // FFN: y = FFN(h) + h (post-LN: then LayerNorm 2) or FFN(LayerNorm2(h)) + h (pre-LN).
    const float* ffn_in = h;
    if (pre) {
      encoder_cpu::add_layer_norm(h, hidden, nullptr, 0, L.ln2_w, L.ln2_b, L.eps2, normed, hidden, N, hidden, isa);
      ffn_in = normed;
    }
    clock.mark(l, kStageLayerNorm);
    Epilogue residual_h;
    residual_h.residual = h;
    residual_h.ldr = hidden;
    if (L.m[2].kind == 1 && L.m[3].kind == 1) {  // both sparse fp32: no row-major intermediate where it can
      encoder_cpu::sparse_ffn(ffn_in, N, hidden, L.m[2].packed, L.m[2].bias.data_ptr<float>(), L.act, L.glu,
                              L.m[3].packed, L.m[3].bias.data_ptr<float>(), xy, hidden, isa, residual_h);
    } else {
      const float* ffn_hidden = u;
      if (L.glu) {
        L.m[2].run(ffn_in, N, u, Epilogue(), isa, isa8);
        float* g = scratch(g_buf, static_cast<size_t>(N * std::max<int64_t>(L.ffn, 1)));
        encoder_cpu::glu_rows(u, nu, N, L.ffn, L.act, g, L.ffn, isa);
        ffn_hidden = g;
      } else {
        Epilogue act;
        act.act = L.act;
        L.m[2].run(ffn_in, N, u, act, isa, isa8);
      }
      L.m[3].run(ffn_hidden, N, xy, residual_h, isa, isa8);
    }
    clock.mark(l, kStageFfn);
    if (!pre) {
      encoder_cpu::add_layer_norm(xy, hidden, nullptr, 0, L.ln2_w, L.ln2_b, L.eps2, xy, hidden, N, hidden, isa);
      clock.mark(l, kStageLayerNorm);
    }
  }
  return y;
}

at::Tensor encoder_layers(const at::Tensor& x, const at::Tensor& cu_seqlens, const std::vector<at::Tensor>& tensors,
                          const std::vector<int64_t>& meta, const std::vector<double>& scalars,
                          const std::vector<at::Tensor>& rope, const at::Tensor& rel_index,
                          const std::string& isa_name, const std::string& int8_isa_name) {
  return run_layers(x, cu_seqlens, tensors, meta, scalars, rope, rel_index, isa_name, int8_isa_name, nullptr);
}

// encoder_layers, and the wall time of each stage of each layer: int64 nanoseconds [nlayers, len(kStageNames)].
std::tuple<at::Tensor, at::Tensor> encoder_layers_timed(
    const at::Tensor& x, const at::Tensor& cu_seqlens, const std::vector<at::Tensor>& tensors,
    const std::vector<int64_t>& meta, const std::vector<double>& scalars, const std::vector<at::Tensor>& rope,
    const at::Tensor& rel_index, const std::string& isa_name, const std::string& int8_isa_name) {
  at::Tensor ns = at::zeros({static_cast<int64_t>(meta.size()) / kMeta, kStages}, at::TensorOptions().dtype(at::kLong));
  at::Tensor y = run_layers(x, cu_seqlens, tensors, meta, scalars, rope, rel_index, isa_name, int8_isa_name,
                            ns.data_ptr<int64_t>());
  return {y, ns};
}

at::Tensor epilogue_rows(const at::Tensor& y, int64_t act, const c10::optional<at::Tensor>& residual,
                         const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  check_activations(y, "y", -1);
  TORCH_CHECK_VALUE(act >= 0 && act <= 3, "sparsekit: act must be 0..3, got ", act);
  at::Tensor out = y.contiguous().clone();
  Epilogue ep;
  ep.act = static_cast<Activation>(act);
  at::Tensor rc;
  if (residual.has_value()) {
    check_activations(*residual, "residual", y.size(1));
    TORCH_CHECK_VALUE(residual->size(0) == y.size(0), "sparsekit: residual must have ", y.size(0), " rows");
    rc = residual->contiguous();
    ep.residual = rc.data_ptr<float>();
    ep.ldr = y.size(1);
  }
  pybind11::gil_scoped_release no_gil;
  encoder_cpu::epilogue_rows(out.data_ptr<float>(), y.size(1), y.size(0), y.size(1), ep, isa);
  return out;
}

// g = act(u[:, :n]) * u[:, n:] (encoder_cpu.h glu_rows), u float32 [M, 2 n].
at::Tensor glu_rows(const at::Tensor& u, int64_t act, const std::string& isa_name) {
  const Isa isa = checked_isa(isa_name);
  check_activations(u, "u", -1);
  TORCH_CHECK_VALUE(u.size(1) % 2 == 0, "sparsekit: a GLU needs an even number of columns [FFN | gate], got ",
                    u.size(1));
  TORCH_CHECK_VALUE(act >= 0 && act <= 3, "sparsekit: act must be 0..3, got ", act);
  const at::Tensor uc = u.contiguous();
  const int64_t n = u.size(1) / 2;
  at::Tensor g = at::empty({u.size(0), n}, u.options());
  pybind11::gil_scoped_release no_gil;
  encoder_cpu::glu_rows(uc.data_ptr<float>(), 2 * n, u.size(0), n, static_cast<Activation>(act), g.data_ptr<float>(),
                        n, isa);
  return g;
}

}  // namespace

void register_encoder(pybind11::module_& m) {
  m.def("packed_attention", &packed_attention, pybind11::arg("qkv"), pybind11::arg("cu_seqlens"),
        pybind11::arg("heads"), pybind11::arg("dq"), pybind11::arg("dv"), pybind11::arg("scale"),
        pybind11::arg("window"), pybind11::arg("isa"),
        "Attention over packed sequences (encoder_cpu.h): qkv float32 [N, H (2 dq + dv)] -> ctx [N, H dv].");
  m.def("add_layer_norm", &add_layer_norm, pybind11::arg("x"), pybind11::arg("residual"), pybind11::arg("weight"),
        pybind11::arg("bias"), pybind11::arg("eps"), pybind11::arg("isa"),
        "LayerNorm(x + residual) * weight + bias over the last dimension of x float32 [M, n].");
  m.def("epilogue_rows", &epilogue_rows, pybind11::arg("y"), pybind11::arg("act"), pybind11::arg("residual"),
        pybind11::arg("isa"), "act(y) + residual (the dense Linear's epilogue), y float32 [M, n].");
  m.def("glu_rows", &glu_rows, pybind11::arg("u"), pybind11::arg("act"), pybind11::arg("isa"),
        "act(u[:, :n]) * u[:, n:] (the fused encoder's GLU) for u float32 [M, 2 n].");
  m.def("encoder_layers", &encoder_layers, pybind11::arg("x"), pybind11::arg("cu_seqlens"), pybind11::arg("tensors"),
        pybind11::arg("meta"), pybind11::arg("scalars"), pybind11::arg("rope"), pybind11::arg("rel_index"),
        pybind11::arg("isa"),
        pybind11::arg("int8_isa"),
        "A stack of fused encoder layers over packed tokens x float32 [N, hidden] (encoder_binding.cpp).");
  m.def("encoder_layers_timed", &encoder_layers_timed, pybind11::arg("x"), pybind11::arg("cu_seqlens"),
        pybind11::arg("tensors"), pybind11::arg("meta"), pybind11::arg("scalars"), pybind11::arg("rope"),
        pybind11::arg("rel_index"), pybind11::arg("isa"), pybind11::arg("int8_isa"),
        "encoder_layers and the wall time of each stage of each layer: (y, int64 ns [layers, stages]); the stages "
        "are ENCODER_STAGES.");
  m.attr("ENCODER_STAGES") = pybind11::tuple(pybind11::cast(std::vector<std::string>(kStageNames, kStageNames + kStages)));
}

}  // namespace binding
}  // namespace sparsekit
