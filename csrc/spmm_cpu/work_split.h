// How sparsekit's CPU kernels split one call's work between threads (spmm_cpu.cpp, spmm_cpu_int8.cpp).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sparsekit {
namespace {

// Threads for `work` units of which each thread should get at least `min_work`: torch's thread count (1 inside
// a parallel region, where at::parallel_for runs serially), capped at work / min_work, at least 1.
inline int64_t worker_threads(int64_t work, int64_t min_work) {
  const int64_t n = at::in_parallel_region() ? 1 : at::get_num_threads();
  return std::max<int64_t>(1, std::min(n, work / min_work));
}

// Split the panels [0, npanels) into n contiguous ranges of about equal cost, given the prefix sums of the panel
// costs (prefix[0] = 0, npanels + 1 entries); cut has n + 1 entries, cut[0] = 0 and cut[n] = npanels.
inline std::vector<int64_t> balanced_cuts(const std::vector<int64_t>& prefix, int64_t n) {
  const int64_t npanels = static_cast<int64_t>(prefix.size()) - 1;
  const int64_t total = prefix[npanels];
  std::vector<int64_t> cut(n + 1, npanels);
  cut[0] = 0;
  for (int64_t t = 1; t < n; ++t) {
    const int64_t target = total * t / n;
    cut[t] = std::lower_bound(prefix.begin(), prefix.end(), target) - prefix.begin();
    cut[t] = std::max(cut[t], cut[t - 1]);
  }
  return cut;
}

}  // namespace
}  // namespace sparsekit
