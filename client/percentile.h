// Percentiles of latency samples, for the client's summary and the load benchmark.
#pragma once

#include <algorithm>
#include <vector>

namespace streamkv::client {

// The p-th percentile (0..100, nearest rank) of `values`; 0 for none.
inline double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  const size_t rank = static_cast<size_t>(p / 100 * static_cast<double>(values.size() - 1) + 0.5);
  std::nth_element(values.begin(), values.begin() + rank, values.end());
  return values[rank];
}

}  // namespace streamkv::client
