// CPU kernels of the drivetl voxelization ops, registered as torch custom ops.
//
// Design: sort-based, no table sized to the grid. Each valid point gets a 64-bit key
// (frame * cells + linear cell index); a stable parallel LSD radix sort of (key, point index)
// pairs groups the points by voxel while keeping input order inside a voxel; runs of equal keys
// are the voxels. Memory is O(points), independent of the grid (a dense table for Waymo's 0.1 m
// grid would be hundreds of MiB). Every floating-point reduction is a sequential loop over one
// voxel's points in a fixed order, so results do not depend on the thread count.
//
// The plain-torch reference (drivetl/ops/_torch_impl.py) is the specification; the tests compare
// these kernels to it bit for bit.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace {

constexpr uint64_t kInvalid = ~uint64_t(0);

inline uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

inline int threads_for(int64_t work) {
  // Below this size the fork/join costs more than it saves.
  return work < 16384 ? 1 : std::max(1, at::get_num_threads());
}

inline int bit_width(uint64_t x) {
  int b = 0;
  while (x) {
    ++b;
    x >>= 1;
  }
  return b;
}

// Stable LSD radix sort of `keys` (and `vals` alongside, when given) on bits [lo_bit, hi_bit) of
// the keys. Each thread histograms its contiguous chunk; digit offsets are laid out digit-major
// then thread-major, so equal digits keep their chunk (= input) order: the sort is stable. The
// digit width is the bit count spread evenly over the fewest passes of at most 11 bits.
void radix_sort(std::vector<uint64_t>& keys, std::vector<int64_t>* vals, int lo_bit, int hi_bit, int nthreads) {
  const int64_t n = static_cast<int64_t>(keys.size());
  const int bits = hi_bit - lo_bit;
  if (n <= 1 || bits <= 0) return;
  const int passes = (bits + 10) / 11;
  const int radix = (bits + passes - 1) / passes;
  const int buckets = 1 << radix;
  const uint64_t mask = static_cast<uint64_t>(buckets - 1);
  std::vector<uint64_t> keys2(n);
  std::vector<int64_t> vals2(vals ? n : 0);
  std::vector<int64_t> hist(static_cast<size_t>(nthreads) * buckets);
  uint64_t* sk = keys.data();
  uint64_t* dk = keys2.data();
  int64_t* sv = vals ? vals->data() : nullptr;
  int64_t* dv = vals ? vals2.data() : nullptr;
  bool in_primary = true;
  if (nthreads == 1) {
    // One read of the keys builds every pass's histogram; each pass is then a single scatter.
    std::vector<int64_t> all(static_cast<size_t>(passes) * buckets, 0);
    for (int64_t i = 0; i < n; ++i)
      for (int q = 0; q < passes; ++q) ++all[static_cast<size_t>(q) * buckets + ((sk[i] >> (lo_bit + q * radix)) & mask)];
    for (int q = 0; q < passes; ++q) {
      int64_t* h = all.data() + static_cast<size_t>(q) * buckets;
      int64_t sum = 0;
      bool skip = false;
      for (int d = 0; d < buckets; ++d) {
        const int64_t c = h[d];
        skip = skip || c == n;
        h[d] = sum;
        sum += c;
      }
      if (skip) continue;
      const int shift = lo_bit + q * radix;
      if (sv) {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t pos = h[(sk[i] >> shift) & mask]++;
          dk[pos] = sk[i];
          dv[pos] = sv[i];
        }
      } else {
        for (int64_t i = 0; i < n; ++i) dk[h[(sk[i] >> shift) & mask]++] = sk[i];
      }
      std::swap(sk, dk);
      std::swap(sv, dv);
      in_primary = !in_primary;
    }
  }
  for (int shift = lo_bit; nthreads > 1 && shift < hi_bit; shift += radix) {
    bool skip = false;
#pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num();
      const int nt = omp_get_num_threads();
      const int64_t lo = n * t / nt;
      const int64_t hi = n * (t + 1) / nt;
      int64_t* h = hist.data() + static_cast<size_t>(t) * buckets;
      std::fill(h, h + buckets, 0);
      for (int64_t i = lo; i < hi; ++i) ++h[(sk[i] >> shift) & mask];
#pragma omp barrier
#pragma omp single
      {
        int64_t sum = 0;
        for (int d = 0; d < buckets; ++d) {
          int64_t digit_total = 0;
          for (int u = 0; u < nt; ++u) {
            const int64_t c = hist[static_cast<size_t>(u) * buckets + d];
            hist[static_cast<size_t>(u) * buckets + d] = sum;
            sum += c;
            digit_total += c;
          }
          if (digit_total == n) skip = true;  // every key has this digit: the pass is a no-op
        }
      }
      if (!skip) {
        if (sv) {
          for (int64_t i = lo; i < hi; ++i) {
            const int64_t pos = h[(sk[i] >> shift) & mask]++;
            dk[pos] = sk[i];
            dv[pos] = sv[i];
          }
        } else {
          for (int64_t i = lo; i < hi; ++i) dk[h[(sk[i] >> shift) & mask]++] = sk[i];
        }
      }
    }
    if (!skip) {
      std::swap(sk, dk);
      std::swap(sv, dv);
      in_primary = !in_primary;
    }
  }
  if (!in_primary) {
    keys.swap(keys2);
    if (vals) vals->swap(vals2);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxel_index_cpu(
    const at::Tensor& points, const at::Tensor& offsets, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> range_min, c10::ArrayRef<double> range_max, c10::ArrayRef<int64_t> grid_shape,
    int64_t max_points_per_voxel, int64_t max_voxels, bool hashed, int64_t seed) {
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3, "voxel_index: points must be (N, C>=3)");
  TORCH_CHECK(points.scalar_type() == at::kFloat, "voxel_index: points must be float32");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1 && offsets.scalar_type() == at::kLong,
              "voxel_index: offsets must be int64 (B+1,)");
  TORCH_CHECK(voxel_size.size() == 3 && range_min.size() == 3 && range_max.size() == 3 && grid_shape.size() == 3,
              "voxel_index: grid arguments need 3 values each");
  TORCH_CHECK(max_points_per_voxel == -1 || max_points_per_voxel >= 1,
              "voxel_index: max_points_per_voxel must be -1 (no cap) or >= 1");
  const int64_t n = points.size(0);
  const int64_t nframes = offsets.size(0) - 1;
  const at::Tensor off_t = offsets.contiguous();
  const int64_t* off = off_t.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[nframes] == n, "voxel_index: offsets must start at 0 and end at N");
  const int64_t nx = grid_shape[0], ny = grid_shape[1], nz = grid_shape[2];
  const uint64_t cells = static_cast<uint64_t>(nx * ny * nz);
  const float* pts = points.data_ptr<float>();
  const int64_t rs = points.stride(0), cs = points.stride(1);
  const float mn[3] = {float(range_min[0]), float(range_min[1]), float(range_min[2])};
  const float mx[3] = {float(range_max[0]), float(range_max[1]), float(range_max[2])};
  const float sz[3] = {float(voxel_size[0]), float(voxel_size[1]), float(voxel_size[2])};
  const float nf[3] = {float(nx), float(ny), float(nz)};
  const int nt = threads_for(n);
  // When keys fit 32 bits (the usual case) the point index rides in the low 32 bits of the same
  // word, so the sort moves one 8-byte array instead of two.
  const int key_bits = bit_width(static_cast<uint64_t>(nframes) * cells);
  const bool packed = key_bits <= 32 && n < (int64_t(1) << 32);

  // 1. Keys of valid points, compacted in input order: each thread compacts its chunk in place,
  //    then the chunks are moved together.
  std::vector<int64_t> chunk_valid(nt + 1, 0);
  std::vector<int64_t> chunk_lo(nt + 1, 0);
  std::vector<uint64_t> skey(n);
  std::vector<int64_t> sidx(packed ? 0 : n);
  bool non_finite = false;
#pragma omp parallel num_threads(nt) reduction(|| : non_finite)
  {
    const int t = omp_get_thread_num();
    const int tn = omp_get_num_threads();
    const int64_t lo = n * t / tn, hi = n * (t + 1) / tn;
    int64_t nvalid = 0;
    bool bad = false;
    // Walk the frames overlapping this chunk; the inner loop is branch-free.
    for (int64_t frame = std::upper_bound(off, off + nframes + 1, lo) - off - 1; frame < nframes; ++frame) {
      const int64_t b = std::max(lo, off[frame]), e = std::min(hi, off[frame + 1]);
      if (b >= hi) break;
      const uint64_t base = static_cast<uint64_t>(frame) * cells;
      for (int64_t i = b; i < e; ++i) {
        const float* p = pts + i * rs;
        const float x = p[0], y = p[cs], z = p[2 * cs];
        bad |= !(std::isfinite(x) & std::isfinite(y) & std::isfinite(z));
        // floor((p - min) / size): for an inside point (p >= min) the quotient is >= 0, where
        // floor equals truncation and floor(d) < n equals d < n; outside points are masked.
        const float fx = (x - mn[0]) / sz[0];
        const float fy = (y - mn[1]) / sz[1];
        const float fz = (z - mn[2]) / sz[2];
        const bool ok = (x >= mn[0]) & (x < mx[0]) & (fx < nf[0]) & (y >= mn[1]) & (y < mx[1]) & (fy < nf[1]) &
                        (z >= mn[2]) & (z < mx[2]) & (fz < nf[2]);
        const int64_t qx = ok ? static_cast<int64_t>(fx) : 0;
        const int64_t qy = ok ? static_cast<int64_t>(fy) : 0;
        const int64_t qz = ok ? static_cast<int64_t>(fz) : 0;
        const uint64_t k = base + static_cast<uint64_t>((qz * ny + qy) * nx + qx);
        if (packed) {
          skey[lo + nvalid] = (k << 32) | static_cast<uint64_t>(i);
        } else {
          skey[lo + nvalid] = k;
          sidx[lo + nvalid] = i;
        }
        nvalid += ok;
      }
    }
    non_finite = non_finite || bad;
    chunk_valid[t + 1] = nvalid;
    chunk_lo[t] = lo;
#pragma omp barrier
#pragma omp single
    {
      for (int u = 0; u < tn; ++u) {
        chunk_valid[u + 1] += chunk_valid[u];
        const int64_t len = chunk_valid[u + 1] - chunk_valid[u];
        if (chunk_lo[u] != chunk_valid[u] && len > 0) {  // moves left only: memmove is safe
          std::memmove(skey.data() + chunk_valid[u], skey.data() + chunk_lo[u], len * sizeof(uint64_t));
          if (!packed) std::memmove(sidx.data() + chunk_valid[u], sidx.data() + chunk_lo[u], len * sizeof(int64_t));
        }
      }
      skey.resize(chunk_valid[tn]);
      if (!packed) sidx.resize(chunk_valid[tn]);
    }
  }
  TORCH_CHECK(!non_finite, "voxel_index: non-finite point coordinates (NaN or inf in x, y or z)");
  const int64_t nv = static_cast<int64_t>(skey.size());

  // 2. Group by voxel: stable sort by key.
  if (packed) {
    radix_sort(skey, nullptr, 32, 32 + key_bits, threads_for(nv));
  } else {
    radix_sort(skey, &sidx, 0, key_bits, threads_for(nv));
  }
  const uint64_t* sk = skey.data();
  const int64_t* si = sidx.data();
  auto key_at = [packed, sk](int64_t i) -> uint64_t { return packed ? sk[i] >> 32 : sk[i]; };
  auto idx_at = [packed, sk, si](int64_t i) -> int64_t {
    return packed ? static_cast<int64_t>(sk[i] & 0xFFFFFFFFull) : si[i];
  };

  // 3. Runs of equal keys are voxels; keep the first max_voxels of each frame.
  std::vector<int64_t> run_start;
  run_start.reserve(nv / 2 + 1);
  for (int64_t i = 0; i < nv; ++i)
    if (i == 0 || key_at(i) != key_at(i - 1)) run_start.push_back(i);
  const int64_t u = static_cast<int64_t>(run_start.size());
  run_start.push_back(nv);
  std::vector<int64_t> kept;  // indices of kept runs, in key order
  std::vector<int32_t> kept_frame;
  kept.reserve(u);
  kept_frame.reserve(u);
  std::vector<int64_t> frame_voxels(nframes, 0);
  int64_t f = 0;
  uint64_t frame_end = cells;  // keys of frame f are below this (keys rise, so no division)
  for (int64_t r = 0; r < u; ++r) {
    while (key_at(run_start[r]) >= frame_end) {
      ++f;
      frame_end += cells;
    }
    if (max_voxels < 0 || frame_voxels[f] < max_voxels) {
      ++frame_voxels[f];
      kept.push_back(r);
      kept_frame.push_back(static_cast<int32_t>(f));
    }
  }
  const int64_t m = static_cast<int64_t>(kept.size());
  std::vector<int64_t> pstart(m + 1, 0);
  for (int64_t v = 0; v < m; ++v) {
    const int64_t len = run_start[kept[v] + 1] - run_start[kept[v]];
    pstart[v + 1] = pstart[v] + (max_points_per_voxel >= 0 ? std::min(len, max_points_per_voxel) : len);
  }
  const int64_t np = pstart[m];

  auto lopt = points.options().dtype(at::kLong);
  at::Tensor coords = at::empty({m, 4}, points.options().dtype(at::kInt));
  at::Tensor counts = at::empty({m}, points.options().dtype(at::kInt));
  at::Tensor p2v = at::empty({n}, lopt);
  at::Tensor voff = at::empty({nframes + 1}, lopt);
  at::Tensor order = at::empty({np}, lopt);
  int32_t* co = coords.data_ptr<int32_t>();
  int32_t* cn = counts.data_ptr<int32_t>();
  int64_t* pv = p2v.data_ptr<int64_t>();
  int64_t* vo = voff.data_ptr<int64_t>();
  int64_t* po = order.data_ptr<int64_t>();
  vo[0] = 0;
  for (int64_t f = 0; f < nframes; ++f) vo[f + 1] = vo[f] + frame_voxels[f];
  std::fill(pv, pv + n, int64_t(-1));
  const uint32_t salt = fmix32(static_cast<uint32_t>((static_cast<uint64_t>(seed) + 0x9E3779B9ull) & 0xFFFFFFFFull));

  const bool lin_fits_32 = cells <= 0xFFFFFFFFull;
  // 4. Per voxel: coordinates, kept points (first K, or the K lowest hashes), in input order.
#pragma omp parallel num_threads(threads_for(np))
  {
    std::vector<std::pair<uint32_t, int64_t>> ranked;
#pragma omp for schedule(static)
    for (int64_t v = 0; v < m; ++v) {
      const int64_t s = run_start[kept[v]], e = run_start[kept[v] + 1];
      const int64_t f = kept_frame[v];
      const uint64_t lin = key_at(s) - static_cast<uint64_t>(f) * cells;
      uint64_t zq, yq, xq;
      if (lin_fits_32) {  // 32-bit divisions are several times cheaper than 64-bit ones
        const uint32_t l32 = static_cast<uint32_t>(lin), nxy = static_cast<uint32_t>(nx * ny);
        const uint32_t z32 = l32 / nxy, rem = l32 - z32 * nxy, y32 = rem / static_cast<uint32_t>(nx);
        zq = z32;
        yq = y32;
        xq = rem - y32 * static_cast<uint32_t>(nx);
      } else {
        zq = lin / static_cast<uint64_t>(nx * ny);
        yq = (lin / static_cast<uint64_t>(nx)) % static_cast<uint64_t>(ny);
        xq = lin % static_cast<uint64_t>(nx);
      }
      co[4 * v + 0] = static_cast<int32_t>(f);
      co[4 * v + 1] = static_cast<int32_t>(zq);
      co[4 * v + 2] = static_cast<int32_t>(yq);
      co[4 * v + 3] = static_cast<int32_t>(xq);
      const int64_t keep = pstart[v + 1] - pstart[v];
      cn[v] = static_cast<int32_t>(keep);
      int64_t w = pstart[v];
      if (keep == e - s || !hashed) {
        for (int64_t i = s; i < s + keep; ++i) {
          const int64_t pt = idx_at(i);
          po[w++] = pt;
          pv[pt] = v;
        }
      } else {
        ranked.clear();
        for (int64_t i = s; i < e; ++i)
          ranked.emplace_back(fmix32(static_cast<uint32_t>(idx_at(i) - off[f]) ^ salt), idx_at(i));
        std::nth_element(ranked.begin(), ranked.begin() + (keep - 1), ranked.end());
        const std::pair<uint32_t, int64_t> cut = ranked[keep - 1];
        for (int64_t i = s; i < e; ++i) {
          const int64_t pt = idx_at(i);
          const std::pair<uint32_t, int64_t> hk(fmix32(static_cast<uint32_t>(pt - off[f]) ^ salt), pt);
          if (hk <= cut) {
            po[w++] = pt;
            pv[pt] = v;
          }
        }
      }
    }
  }
  return {coords, counts, p2v, voff, order};
}

template <typename T>
void segment_reduce_kernel(const T* vals, int64_t rs, int64_t cs, int64_t c, const int64_t* order,
                           const int64_t* starts, int64_t m, int64_t reduce, T* out, int64_t* arg, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t s = 0; s < m; ++s) {
    const int64_t b = starts[s], e = starts[s + 1];
    T* o = out + s * c;
    if (reduce == 2) {
      int64_t* a = arg + s * c;
      if (b == e) {
        for (int64_t j = 0; j < c; ++j) {
          o[j] = T(0);
          a[j] = -1;
        }
        continue;
      }
      for (int64_t j = 0; j < c; ++j) {
        o[j] = vals[order[b] * rs + j * cs];
        a[j] = order[b];
      }
      for (int64_t i = b + 1; i < e; ++i) {
        const T* row = vals + order[i] * rs;
        for (int64_t j = 0; j < c; ++j) {
          const T x = row[j * cs];
          if (x > o[j]) {
            o[j] = x;
            a[j] = order[i];
          }
        }
      }
    } else {
      for (int64_t j = 0; j < c; ++j) o[j] = T(0);
      for (int64_t i = b; i < e; ++i) {
        const T* row = vals + order[i] * rs;
        for (int64_t j = 0; j < c; ++j) o[j] += row[j * cs];
      }
      if (reduce == 1 && e > b) {
        const T cnt = static_cast<T>(e - b);
        for (int64_t j = 0; j < c; ++j) o[j] = o[j] / cnt;
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> segment_reduce_cpu(const at::Tensor& values, const at::Tensor& point_order,
                                                       const at::Tensor& counts, int64_t reduce) {
  TORCH_CHECK(values.dim() == 2, "segment_reduce: values must be (N, C)");
  TORCH_CHECK(point_order.dim() == 1 && point_order.scalar_type() == at::kLong,
              "segment_reduce: point_order must be int64 (P,)");
  TORCH_CHECK(counts.dim() == 1, "segment_reduce: counts must be (M,)");
  TORCH_CHECK(reduce >= 0 && reduce <= 2, "segment_reduce: reduce must be 0 (sum), 1 (mean) or 2 (max)");
  const int64_t m = counts.size(0), c = values.size(1), p = point_order.size(0);
  const at::Tensor cnt = counts.to(at::kLong).contiguous();
  const int64_t* cp = cnt.data_ptr<int64_t>();
  std::vector<int64_t> starts(m + 1, 0);
  for (int64_t s = 0; s < m; ++s) starts[s + 1] = starts[s] + cp[s];
  TORCH_CHECK(starts[m] == p, "segment_reduce: counts must sum to len(point_order)");
  const at::Tensor ord = point_order.contiguous();
  at::Tensor out = at::empty({m, c}, values.options());
  const std::vector<int64_t> arg_shape = reduce == 2 ? std::vector<int64_t>{m, c} : std::vector<int64_t>{0};
  at::Tensor arg = at::empty(arg_shape, values.options().dtype(at::kLong));
  const int nt = threads_for(p * c);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "segment_reduce_cpu", [&] {
    segment_reduce_kernel<scalar_t>(values.data_ptr<scalar_t>(), values.stride(0), values.stride(1), c,
                                    ord.data_ptr<int64_t>(), starts.data(), m, reduce, out.data_ptr<scalar_t>(),
                                    reduce == 2 ? arg.data_ptr<int64_t>() : nullptr, nt);
  });
  return {out, arg};
}

}  // namespace

TORCH_LIBRARY(drivetl_ops, m) {
  // The fake (shape-only) and autograd registrations live in Python, in this module.
  m.set_python_module("drivetl.ops._backend");
  m.def(
      "voxel_index(Tensor points, Tensor offsets, float[] voxel_size, float[] range_min, float[] range_max, "
      "int[] grid_shape, int max_points_per_voxel, int max_voxels, bool hashed, int seed) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("segment_reduce(Tensor values, Tensor point_order, Tensor counts, int reduce) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(drivetl_ops, CPU, m) {
  m.impl("voxel_index", &voxel_index_cpu);
  m.impl("segment_reduce", &segment_reduce_cpu);
}
