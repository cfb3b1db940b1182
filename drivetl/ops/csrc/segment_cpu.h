// CPU kernels of segment_reduce (grouped sum/mean/max; float64, float32, float16, bfloat16, each
// adding in its own precision like the reference), index_reduce (the same reductions by a
// row -> segment index, without grouping) and pad_voxels (hard voxelization), included by
// voxelize_cpu.cpp, which registers them.
//
// Each segment is reduced by one thread, sequentially, in the given row order (no atomics), so the
// result is bit-identical to the reference whatever the thread count. Rows are gathered through the
// row order; the gather runs ahead with prefetches, which hides most of its cache misses.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <omp.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

namespace drivetl_ops {

constexpr int64_t kPrefetch = 12;  // rows gathered ahead

// Segment starts from counts (int32 from voxel_index, int64 from group_by_index).
inline std::vector<int64_t> segment_starts(const at::Tensor& counts) {
  const at::Tensor cnt = counts.contiguous();
  const int64_t m = cnt.size(0);
  std::vector<int64_t> starts(m + 1, 0);
  AT_DISPATCH_INTEGRAL_TYPES(cnt.scalar_type(), "segment_starts", [&] {
    const scalar_t* c = cnt.data_ptr<scalar_t>();
    for (int64_t s = 0; s < m; ++s) starts[s + 1] = starts[s] + static_cast<int64_t>(c[s]);
  });
  return starts;
}

// C > 0: compile-time channel count with contiguous channels.
template <typename T, int C>
void segment_reduce_rows(const T* vals, int64_t rs, int64_t cs, int64_t c_rt, const int64_t* order, int64_t p,
                         const int64_t* starts, int64_t m, int64_t reduce, T* out, int64_t* arg, int nt) {
  const int64_t c = C > 0 ? C : c_rt, col = C > 0 ? 1 : cs;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t s = 0; s < m; ++s) {
    const int64_t b = starts[s], e = starts[s + 1];
    T* o = out + s * c;
    if (e + kPrefetch < p) __builtin_prefetch(vals + order[e + kPrefetch] * rs);
    if (reduce == 2) {
      int64_t* a = arg + s * c;
      if (b == e) {
        for (int64_t j = 0; j < c; ++j) {
          o[j] = T(0);
          a[j] = -1;
        }
        continue;
      }
      const T* first = vals + order[b] * rs;
      for (int64_t j = 0; j < c; ++j) {
        o[j] = first[j * col];
        a[j] = order[b];
      }
      for (int64_t i = b + 1; i < e; ++i) {
        if (i + kPrefetch < p) __builtin_prefetch(vals + order[i + kPrefetch] * rs);
        const T* row = vals + order[i] * rs;
        for (int64_t j = 0; j < c; ++j) {
          const T x = row[j * col];
          if (x > o[j]) {
            o[j] = x;
            a[j] = order[i];
          }
        }
      }
    } else {
      T acc[C > 0 ? C : 1];
      if (C > 0) {
        for (int j = 0; j < C; ++j) acc[j] = T(0);
        for (int64_t i = b; i < e; ++i) {
          if (i + kPrefetch < p) __builtin_prefetch(vals + order[i + kPrefetch] * rs);
          const T* row = vals + order[i] * rs;
          for (int j = 0; j < C; ++j) acc[j] += row[j];
        }
        for (int j = 0; j < C; ++j) o[j] = acc[j];
      } else {
        for (int64_t j = 0; j < c; ++j) o[j] = T(0);
        for (int64_t i = b; i < e; ++i) {
          if (i + kPrefetch < p) __builtin_prefetch(vals + order[i + kPrefetch] * rs);
          const T* row = vals + order[i] * rs;
          for (int64_t j = 0; j < c; ++j) o[j] += row[j * col];
        }
      }
      if (reduce == 1 && e > b) {
        const T cnt = static_cast<T>(e - b);
        for (int64_t j = 0; j < c; ++j) o[j] = o[j] / cnt;
      }
    }
  }
}

inline std::tuple<at::Tensor, at::Tensor> segment_reduce_cpu(const at::Tensor& values,
                                                              const at::Tensor& point_order,
                                                              const at::Tensor& counts, int64_t reduce) {
  TORCH_CHECK(values.dim() == 2, "segment_reduce: values must be (N, C)");
  TORCH_CHECK(point_order.dim() == 1 && point_order.scalar_type() == at::kLong,
              "segment_reduce: point_order must be int64 (P,)");
  TORCH_CHECK(counts.dim() == 1 && !at::isFloatingType(counts.scalar_type()),
              "segment_reduce: counts must be integer (M,)");
  TORCH_CHECK(reduce >= 0 && reduce <= 2, "segment_reduce: reduce must be 0 (sum), 1 (mean) or 2 (max)");
  const int64_t m = counts.size(0), c = values.size(1), p = point_order.size(0);
  const std::vector<int64_t> starts = segment_starts(counts);
  TORCH_CHECK(starts[m] == p, "segment_reduce: counts must sum to len(point_order)");
  const at::Tensor ord = point_order.contiguous();
  const int64_t* op = ord.data_ptr<int64_t>();
  const int64_t nrows = values.size(0);
  for (int64_t i = 0; i < p; ++i)
    TORCH_CHECK(op[i] >= 0 && op[i] < nrows, "segment_reduce: point_order holds a row out of range");
  at::Tensor out = at::empty({m, c}, values.options());
  at::Tensor arg = at::empty(reduce == 2 ? at::IntArrayRef{m, c} : at::IntArrayRef{0},
                             values.options().dtype(at::kLong));
  const int nt = p * c >= 65536 ? std::max(1, at::get_num_threads()) : 1;
  const int64_t rs = values.stride(0), cs = values.stride(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "segment_reduce_cpu", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    int64_t* a = reduce == 2 ? arg.data_ptr<int64_t>() : nullptr;
    if (cs == 1 && c == 4)
      segment_reduce_rows<scalar_t, 4>(v, rs, cs, c, op, p, starts.data(), m, reduce, o, a, nt);
    else if (cs == 1 && c == 3)
      segment_reduce_rows<scalar_t, 3>(v, rs, cs, c, op, p, starts.data(), m, reduce, o, a, nt);
    else
      segment_reduce_rows<scalar_t, 0>(v, rs, cs, c, op, p, starts.data(), m, reduce, o, a, nt);
  });
  return {out, arg};
}

// Reduction by segment index in input order: rows i with index[i] >= 0, visited in ascending i,
// are exactly each segment's rows in the reference order, so the result equals segment_reduce
// over the stable grouping, bit for bit, without grouping: the rows are read sequentially and
// only the (M, C) output is accessed at random (it usually fits in cache; the gather of
// segment_reduce does not). With several threads each one owns a range of segments.
template <typename T, int C>
void index_reduce_rows(const T* vals, int64_t rs, int64_t cs, int64_t c_rt, const int64_t* index, int64_t n,
                       int64_t m, int64_t reduce, T* out, int64_t* arg, int64_t* cnt, int nt) {
  const int64_t c = C > 0 ? C : c_rt, col = C > 0 ? 1 : cs;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t lo = m * t / tn, hi = m * (t + 1) / tn;
    std::fill(out + lo * c, out + hi * c, T(0));
    std::fill(cnt + lo, cnt + hi, int64_t(0));
    if (reduce == 2) std::fill(arg + lo * c, arg + hi * c, int64_t(-1));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = index[i];
      if (s < lo || s >= hi) continue;  // also skips -1
      const T* row = vals + i * rs;
      T* o = out + s * c;
      if (reduce == 2) {
        int64_t* a = arg + s * c;
        if (cnt[s] == 0) {
          for (int64_t j = 0; j < c; ++j) {
            o[j] = row[j * col];
            a[j] = i;
          }
        } else {
          for (int64_t j = 0; j < c; ++j) {
            const T x = row[j * col];
            if (x > o[j]) {
              o[j] = x;
              a[j] = i;
            }
          }
        }
      } else {
        for (int64_t j = 0; j < c; ++j) o[j] += row[j * col];
      }
      ++cnt[s];
    }
    if (reduce == 1)
      for (int64_t s = lo; s < hi; ++s)
        if (cnt[s] > 0) {
          const T k = static_cast<T>(cnt[s]);
          for (int64_t j = 0; j < c; ++j) out[s * c + j] = out[s * c + j] / k;
        }
  }
}

inline std::tuple<at::Tensor, at::Tensor> index_reduce_cpu(const at::Tensor& values, const at::Tensor& index,
                                                            int64_t num_segments, int64_t reduce) {
  TORCH_CHECK(values.dim() == 2, "index_reduce: values must be (N, C)");
  TORCH_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong && index.size(0) == values.size(0),
              "index_reduce: index must be int64 (N,)");
  TORCH_CHECK(num_segments >= 0, "index_reduce: num_segments must be >= 0");
  TORCH_CHECK(reduce >= 0 && reduce <= 2, "index_reduce: reduce must be 0 (sum), 1 (mean) or 2 (max)");
  const int64_t n = values.size(0), c = values.size(1), m = num_segments;
  const at::Tensor idx = index.contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(ip[i] >= -1 && ip[i] < m, "index_reduce: index values must be -1 or in [0, num_segments)");
  at::Tensor out = at::empty({m, c}, values.options());
  at::Tensor arg = at::empty(reduce == 2 ? at::IntArrayRef{m, c} : at::IntArrayRef{0},
                             values.options().dtype(at::kLong));
  std::vector<int64_t> cnt(m);
  const int nt = n * c >= 262144 && m >= 1024 ? std::max(1, at::get_num_threads()) : 1;
  const int64_t rs = values.stride(0), cs = values.stride(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "index_reduce_cpu", [&] {
    const scalar_t* v = values.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    int64_t* a = reduce == 2 ? arg.data_ptr<int64_t>() : nullptr;
    if (cs == 1 && c == 4)
      index_reduce_rows<scalar_t, 4>(v, rs, cs, c, ip, n, m, reduce, o, a, cnt.data(), nt);
    else if (cs == 1 && c == 3)
      index_reduce_rows<scalar_t, 3>(v, rs, cs, c, ip, n, m, reduce, o, a, cnt.data(), nt);
    else
      index_reduce_rows<scalar_t, 0>(v, rs, cs, c, ip, n, m, reduce, o, a, cnt.data(), nt);
  });
  return {out, arg};
}

// (M, K, C) zero-padded voxels: voxel v's points (rows of `points` listed by point_order) in
// slots 0 .. counts[v]-1, exact copies.
inline at::Tensor pad_voxels_cpu(const at::Tensor& points, const at::Tensor& point_order, const at::Tensor& counts,
                                 int64_t k) {
  TORCH_CHECK(points.dim() == 2, "pad_voxels: points must be (N, C)");
  TORCH_CHECK(point_order.dim() == 1 && point_order.scalar_type() == at::kLong,
              "pad_voxels: point_order must be int64 (P,)");
  TORCH_CHECK(counts.dim() == 1 && !at::isFloatingType(counts.scalar_type()), "pad_voxels: counts must be integer");
  TORCH_CHECK(k >= 0, "pad_voxels: k must be >= 0");
  const int64_t m = counts.size(0), c = points.size(1), p = point_order.size(0), nrows = points.size(0);
  const std::vector<int64_t> starts = segment_starts(counts);
  TORCH_CHECK(starts[m] == p, "pad_voxels: counts must sum to len(point_order)");
  const at::Tensor pts = points.contiguous();
  const at::Tensor ord = point_order.contiguous();
  const int64_t* op = ord.data_ptr<int64_t>();
  at::Tensor out = at::zeros({m, k, c}, points.options());
  const size_t row_bytes = static_cast<size_t>(c) * pts.element_size();
  const char* src = static_cast<const char*>(pts.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  for (int64_t v = 0; v < m; ++v) {
    const int64_t b = starts[v], e = starts[v + 1];
    TORCH_CHECK(e - b <= k, "pad_voxels: a voxel has more than k points");
    for (int64_t i = b; i < e; ++i) {
      TORCH_CHECK(op[i] >= 0 && op[i] < nrows, "pad_voxels: point_order holds a row out of range");
      std::memcpy(dst + ((v * k) + (i - b)) * row_bytes, src + op[i] * row_bytes, row_bytes);
    }
  }
  return out;
}

}  // namespace drivetl_ops
