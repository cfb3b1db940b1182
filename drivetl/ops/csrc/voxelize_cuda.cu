// CUDA kernels of the drivetl voxelization ops. Plain CUDA C++: no torch headers, so
// `nvcc -c voxelize_cuda.cu` works on any machine with the CUDA toolkit (CI compile check).
//
// Design: sort-based, with cub's LSD radix sort.
//  * Each point gets a 64-bit key (frame * cells + linear cell index, or a sentinel past every
//    valid key for points outside the grid). cub::DeviceRadixSort::SortPairs over the key's
//    significant bits only groups points by voxel; LSD radix sort is stable, so inside a voxel
//    the points stay in input order ("first K" is then a prefix), and voxels come out in key
//    order (frame, z, y, x) -- the order the torch reference defines.
//  * Head flags + an exclusive scan turn the sorted keys into voxel runs (a point's run is its
//    inclusive head count - 1); per-frame voxel caps become a rank test against each frame's
//    first voxel (binary search over the sorted voxel keys).
//  * keep="hashed": a second stable radix sort of (voxel run << 32 | seeded hash) ranks the
//    points of each voxel by hash; the lowest K survive.
//  * An exclusive scan of the keep flags gives each kept point its output slot.
//  * Reductions: one thread per (voxel, channel) loops over the voxel's points in order with
//    explicitly rounded adds (__fadd_rn: no FMA contraction); no float atomics anywhere.
// Why not a hash table: GPU hash insertion decides voxel ids and point order by atomic races, so
// a deterministic result would still need a sort afterwards; sorting once does both jobs, needs
// O(points) memory (never a grid-sized table) and its cost is a few memory passes per bit-group.

#include "voxelize_cuda.h"

#include "ops_common.h"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>

namespace drivetl_cuda {
namespace {

constexpr int kThreads = 256;

using drivetl_common::bit_width;
using drivetl_common::fmix32;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

inline size_t align_up(size_t bytes) { return (bytes + 255) & ~size_t(255); }

// Offsets (bytes) of every scratch array inside the one workspace allocation.
struct Layout {
  size_t keys_in, idx_in, keys, idx, flags, run_ex, unique, run_start;
  size_t bad, frame_first, frame_kept, voff, vox_new_id, vox_run, vox_count, run_of, keep, out_pos;
  size_t keys2_in, vals2_in, keys2, vals2, temp, temp_bytes, total;
};

Layout make_layout(int64_t n, int64_t nframes, bool hashed) {
  Layout l{};
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += align_up(bytes);
    return at;
  };
  const size_t n1 = static_cast<size_t>(n) + 1;
  const size_t b1 = static_cast<size_t>(nframes) + 1;
  l.keys_in = take(n1 * 8);
  l.idx_in = take(n1 * 8);
  l.keys = take(n1 * 8);
  l.idx = take(n1 * 8);
  l.flags = take(n1 * 8);
  l.run_ex = take(n1 * 8);
  l.unique = take(n1 * 8);
  l.run_start = take((n1 + 1) * 8);
  l.bad = take(8);
  l.frame_first = take(b1 * 8);
  l.frame_kept = take(b1 * 8);
  l.voff = take(b1 * 8);
  l.vox_new_id = take(n1 * 8);
  l.vox_run = take(n1 * 8);
  l.vox_count = take(n1 * 8);
  l.run_of = take(n1 * 8);
  l.keep = take(n1 * 8);
  l.out_pos = take(n1 * 8);
  if (hashed) {
    l.keys2_in = take(n1 * 8);
    l.vals2_in = take(n1 * 8);
    l.keys2 = take(n1 * 8);
    l.vals2 = take(n1 * 8);
  }
  const int items = static_cast<int>(n);
  size_t sort_bytes = 0, scan_bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint64_t*>(nullptr),
                                  static_cast<uint64_t*>(nullptr), static_cast<const int64_t*>(nullptr),
                                  static_cast<int64_t*>(nullptr), items);
  cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, static_cast<const int64_t*>(nullptr),
                                static_cast<int64_t*>(nullptr), items + 1);
  l.temp_bytes = std::max(std::max(sort_bytes, scan_bytes), size_t(1));
  l.temp = take(l.temp_bytes);
  l.total = off;
  return l;
}

template <typename T>
T* at(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

__global__ void keys_kernel(const float* pts, int64_t rs, int64_t cs, int64_t n, const int64_t* off,
                            int64_t nframes, VoxelParams p, uint64_t cells, uint64_t sentinel, uint64_t* keys,
                            int64_t* idx, int32_t* bad) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  int64_t lo = 0, hi = nframes;  // off[lo] <= i < off[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (off[mid] <= i) lo = mid; else hi = mid;
  }
  bool ok = true;
  int64_t q[3];
  for (int a = 0; a < 3; ++a) {
    const float x = pts[i * rs + a * cs];
    if (!isfinite(x)) atomicOr(bad, 1);  // an integer flag: order-independent
    const float f = floorf(__fdiv_rn(__fsub_rn(x, p.range_min[a]), p.voxel_size[a]));
    ok = ok && (x >= p.range_min[a]) && (x < p.range_max[a]) && (f < static_cast<float>(p.grid_shape[a]));
    q[a] = ok ? static_cast<int64_t>(f) : 0;
  }
  const uint64_t lin = static_cast<uint64_t>((q[2] * p.grid_shape[1] + q[1]) * p.grid_shape[0] + q[0]);
  keys[i] = ok ? static_cast<uint64_t>(lo) * cells + lin : sentinel;
  idx[i] = i;
}

__device__ inline int64_t lower_bound(const uint64_t* a, int64_t n, uint64_t v) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (a[mid] < v) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// flags[j] = 1 where sorted point j starts a voxel run (never for out-of-grid points).
__global__ void heads_kernel(const uint64_t* keys, int64_t n, uint64_t sentinel, int64_t* flags) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  flags[j] = keys[j] != sentinel && (j == 0 || keys[j] != keys[j - 1]);
}

// run_ex = exclusive scan of flags; run_ex[n] = number of voxel runs U. Writes each run's key and
// start, and run_start[U] = number of in-grid points.
__global__ void runs_kernel(const uint64_t* keys, const int64_t* flags, const int64_t* run_ex, int64_t n,
                            uint64_t sentinel, uint64_t* unique, int64_t* run_start) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  if (flags[j]) {
    unique[run_ex[j]] = keys[j];
    run_start[run_ex[j]] = j;
  }
  if (keys[j] != sentinel && (j + 1 == n || keys[j + 1] == sentinel)) run_start[run_ex[n]] = j + 1;
  if (j == 0 && keys[0] == sentinel) run_start[0] = 0;
}

__global__ void frames_kernel(const uint64_t* unique, const int64_t* valid_runs, uint64_t cells, int64_t nframes,
                              int64_t max_voxels, int64_t* frame_first, int64_t* frame_kept) {
  const int64_t f = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t u = *valid_runs;
  if (f >= nframes) return;
  const int64_t first = lower_bound(unique, u, static_cast<uint64_t>(f) * cells);
  const int64_t end = lower_bound(unique, u, static_cast<uint64_t>(f + 1) * cells);
  frame_first[f] = first;
  frame_kept[f] = max_voxels >= 0 ? min(end - first, max_voxels) : end - first;
}

__global__ void voxel_offsets_kernel(const int64_t* frame_kept, int64_t nframes, int64_t* voff) {
  int64_t acc = 0;
  voff[0] = 0;
  for (int64_t f = 0; f < nframes; ++f) {
    acc += frame_kept[f];
    voff[f + 1] = acc;
  }
}

__global__ void select_kernel(const uint64_t* unique, const int64_t* run_start, const int64_t* valid_runs,
                              uint64_t cells, const int64_t* frame_first, const int64_t* frame_kept,
                              const int64_t* voff, int64_t max_points, int64_t* vox_new_id, int64_t* vox_run,
                              int64_t* vox_count, int64_t n) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n || r >= *valid_runs) return;
  const int64_t f = static_cast<int64_t>(unique[r] / cells);
  const int64_t rank = r - frame_first[f];
  if (rank < frame_kept[f]) {
    const int64_t id = voff[f] + rank;
    const int64_t len = run_start[r + 1] - run_start[r];
    vox_new_id[r] = id;
    vox_run[id] = r;
    vox_count[id] = max_points >= 0 ? min(len, max_points) : len;
  } else {
    vox_new_id[r] = -1;
  }
}

__global__ void position_kernel(const uint64_t* keys, const int64_t* idx, const int64_t* run_start,
                                const int64_t* run_ex, const int64_t* vox_new_id, const int64_t* off,
                                uint64_t cells, uint64_t sentinel, int64_t n, int64_t max_points, bool hashed,
                                uint32_t salt, int64_t* run_of, int64_t* keep, uint64_t* keys2, int64_t* vals2) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  if (keys[j] == sentinel) {
    keep[j] = 0;
    if (hashed) {
      keys2[j] = (static_cast<uint64_t>(n) << 32) | 0xFFFFFFFFull;  // after every valid run
      vals2[j] = j;
    }
    return;
  }
  const int64_t lo = run_ex[j + 1] - 1;  // runs started at or before j, minus one
  run_of[j] = lo;
  const bool voxel_kept = vox_new_id[lo] >= 0;
  if (hashed) {
    const int64_t f = static_cast<int64_t>(keys[j] / cells);
    const uint32_t h = fmix32(static_cast<uint32_t>(idx[j] - off[f]) ^ salt);
    keys2[j] = (static_cast<uint64_t>(lo) << 32) | h;
    vals2[j] = j;
    keep[j] = 0;  // decided after the hash sort
  } else {
    keep[j] = voxel_kept && (max_points < 0 || j - run_start[lo] < max_points);
  }
}

__global__ void hashed_keep_kernel(const int64_t* vals2, const uint64_t* keys, const int64_t* run_of,
                                   const int64_t* run_start, const int64_t* vox_new_id, uint64_t sentinel,
                                   int64_t n, int64_t max_points, int64_t* keep) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const int64_t j = vals2[t];
  if (keys[j] == sentinel) return;
  const int64_t r = run_of[j];
  keep[j] = vox_new_id[r] >= 0 && (t - run_start[r]) < max_points;
}

__global__ void emit_points_kernel(const int64_t* keep, const int64_t* out_pos, const int64_t* idx,
                                   const int64_t* run_of, const int64_t* vox_new_id, int64_t n,
                                   int64_t* point_order, int64_t* point_to_voxel) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n || !keep[j]) return;
  const int64_t pt = idx[j];
  point_order[out_pos[j]] = pt;
  point_to_voxel[pt] = vox_new_id[run_of[j]];
}

__global__ void emit_voxels_kernel(const int64_t* vox_run, const int64_t* vox_count, const uint64_t* unique,
                                   uint64_t cells, int64_t nx, int64_t ny, int64_t m, int32_t* coords,
                                   int32_t* counts) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v >= m) return;
  const uint64_t key = unique[vox_run[v]];
  const int64_t lin = static_cast<int64_t>(key % cells);
  coords[4 * v + 0] = static_cast<int32_t>(key / cells);
  coords[4 * v + 1] = static_cast<int32_t>(lin / (nx * ny));
  coords[4 * v + 2] = static_cast<int32_t>((lin / nx) % ny);
  coords[4 * v + 3] = static_cast<int32_t>(lin % nx);
  counts[v] = static_cast<int32_t>(vox_count[v]);
}

__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <typename T>
__global__ void segment_reduce_kernel(const T* vals, int64_t rs, int64_t cs, int64_t c, const int64_t* order,
                                      const int64_t* starts, int64_t m, int64_t reduce, T* out, int64_t* arg) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= m * c) return;
  const int64_t s = t / c, j = t % c;
  const int64_t b = starts[s], e = starts[s + 1];
  if (reduce == 2) {
    if (b == e) {
      out[t] = T(0);
      arg[t] = -1;
      return;
    }
    T acc = vals[order[b] * rs + j * cs];
    int64_t a = order[b];
    for (int64_t i = b + 1; i < e; ++i) {
      const T x = vals[order[i] * rs + j * cs];
      if (x > acc) {
        acc = x;
        a = order[i];
      }
    }
    out[t] = acc;
    arg[t] = a;
  } else {
    T acc = T(0);
    for (int64_t i = b; i < e; ++i) acc = add_rn(acc, vals[order[i] * rs + j * cs]);
    if (reduce == 1 && e > b) acc = div_rn(acc, static_cast<T>(e - b));
    out[t] = acc;
  }
}

template <typename T>
cudaError_t segment_reduce_impl(const T* values, int64_t rs, int64_t cs, int64_t c, const int64_t* order,
                                const int64_t* starts, int64_t m, int64_t reduce, T* out, int64_t* arg,
                                cudaStream_t stream) {
  if (m * c == 0) return cudaSuccess;
  segment_reduce_kernel<T><<<blocks_for(m * c), kThreads, 0, stream>>>(values, rs, cs, c, order, starts, m, reduce,
                                                                        out, arg);
  return cudaGetLastError();
}

#define DTL_TRY(expr)                      \
  do {                                     \
    const cudaError_t err_ = (expr);       \
    if (err_ != cudaSuccess) return err_;  \
  } while (0)

}  // namespace

size_t voxel_index_workspace_bytes(int64_t n, int64_t nframes, const VoxelParams& params) {
  return make_layout(n, nframes, params.hashed && params.max_points_per_voxel >= 0).total;
}

cudaError_t voxel_index_plan(const float* points, int64_t row_stride, int64_t col_stride, int64_t n,
                             const int64_t* offsets, int64_t nframes, const VoxelParams& params,
                             void* workspace, size_t workspace_bytes, int64_t* num_voxels, int64_t* num_kept,
                             int32_t* non_finite, cudaStream_t stream) {
  const bool hashed = params.hashed && params.max_points_per_voxel >= 0;
  const Layout l = make_layout(n, nframes, hashed);
  if (workspace_bytes < l.total) return cudaErrorInvalidValue;
  void* ws = workspace;
  const uint64_t cells = static_cast<uint64_t>(params.grid_shape[0] * params.grid_shape[1] * params.grid_shape[2]);
  const uint64_t sentinel = static_cast<uint64_t>(nframes) * cells;
  if (n == 0) {
    DTL_TRY(cudaMemsetAsync(at<int64_t>(ws, l.voff), 0, (nframes + 1) * sizeof(int64_t), stream));
    *num_voxels = 0;
    *num_kept = 0;
    *non_finite = 0;
    return cudaSuccess;
  }
  const int items = static_cast<int>(n);
  size_t temp_bytes = l.temp_bytes;
  void* temp = at<char>(ws, l.temp);
  uint64_t* keys = at<uint64_t>(ws, l.keys);
  int64_t* idx = at<int64_t>(ws, l.idx);
  uint64_t* unique = at<uint64_t>(ws, l.unique);
  int64_t* flags = at<int64_t>(ws, l.flags);
  int64_t* run_ex = at<int64_t>(ws, l.run_ex);
  int64_t* run_start = at<int64_t>(ws, l.run_start);
  const int64_t* valid_runs = run_ex + n;
  int64_t* keep = at<int64_t>(ws, l.keep);
  int64_t* out_pos = at<int64_t>(ws, l.out_pos);

  DTL_TRY(cudaMemsetAsync(at<int32_t>(ws, l.bad), 0, sizeof(int32_t), stream));
  keys_kernel<<<blocks_for(n), kThreads, 0, stream>>>(points, row_stride, col_stride, n, offsets, nframes, params,
                                                       cells, sentinel, at<uint64_t>(ws, l.keys_in),
                                                       at<int64_t>(ws, l.idx_in), at<int32_t>(ws, l.bad));
  DTL_TRY(cudaGetLastError());
  DTL_TRY(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, at<uint64_t>(ws, l.keys_in), keys,
                                          at<int64_t>(ws, l.idx_in), idx, items, 0, bit_width(sentinel), stream));
  DTL_TRY(cudaMemsetAsync(flags + n, 0, sizeof(int64_t), stream));
  heads_kernel<<<blocks_for(n), kThreads, 0, stream>>>(keys, n, sentinel, flags);
  DTL_TRY(cudaGetLastError());
  temp_bytes = l.temp_bytes;
  DTL_TRY(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, flags, run_ex, items + 1, stream));
  runs_kernel<<<blocks_for(n), kThreads, 0, stream>>>(keys, flags, run_ex, n, sentinel, unique, run_start);
  DTL_TRY(cudaGetLastError());
  frames_kernel<<<blocks_for(nframes), kThreads, 0, stream>>>(unique, valid_runs, cells, nframes, params.max_voxels,
                                                              at<int64_t>(ws, l.frame_first),
                                                              at<int64_t>(ws, l.frame_kept));
  DTL_TRY(cudaGetLastError());
  voxel_offsets_kernel<<<1, 1, 0, stream>>>(at<int64_t>(ws, l.frame_kept), nframes, at<int64_t>(ws, l.voff));
  DTL_TRY(cudaGetLastError());
  select_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      unique, run_start, valid_runs, cells, at<int64_t>(ws, l.frame_first), at<int64_t>(ws, l.frame_kept),
      at<int64_t>(ws, l.voff), params.max_points_per_voxel, at<int64_t>(ws, l.vox_new_id),
      at<int64_t>(ws, l.vox_run), at<int64_t>(ws, l.vox_count), n);
  DTL_TRY(cudaGetLastError());
  DTL_TRY(cudaMemsetAsync(keep, 0, (n + 1) * sizeof(int64_t), stream));
  const uint32_t salt = drivetl_common::keep_salt(params.seed);
  position_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      keys, idx, run_start, run_ex, at<int64_t>(ws, l.vox_new_id), offsets, cells, sentinel, n,
      params.max_points_per_voxel, hashed, salt, at<int64_t>(ws, l.run_of), keep,
      hashed ? at<uint64_t>(ws, l.keys2_in) : nullptr, hashed ? at<int64_t>(ws, l.vals2_in) : nullptr);
  DTL_TRY(cudaGetLastError());
  if (hashed) {
    temp_bytes = l.temp_bytes;
    DTL_TRY(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, at<uint64_t>(ws, l.keys2_in), at<uint64_t>(ws, l.keys2),
                                            at<int64_t>(ws, l.vals2_in), at<int64_t>(ws, l.vals2), items, 0,
                                            32 + bit_width(static_cast<uint64_t>(n)), stream));
    hashed_keep_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
        at<int64_t>(ws, l.vals2), keys, at<int64_t>(ws, l.run_of), run_start, at<int64_t>(ws, l.vox_new_id),
        sentinel, n, params.max_points_per_voxel, keep);
    DTL_TRY(cudaGetLastError());
  }
  temp_bytes = l.temp_bytes;
  DTL_TRY(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, keep, out_pos, items + 1, stream));
  DTL_TRY(cudaMemcpyAsync(num_voxels, at<int64_t>(ws, l.voff) + nframes, sizeof(int64_t), cudaMemcpyDeviceToHost,
                          stream));
  DTL_TRY(cudaMemcpyAsync(num_kept, out_pos + n, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  DTL_TRY(cudaMemcpyAsync(non_finite, at<int32_t>(ws, l.bad), sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  return cudaStreamSynchronize(stream);
}

cudaError_t voxel_index_emit(int64_t n, int64_t nframes, const VoxelParams& params, void* workspace,
                             size_t workspace_bytes, int64_t num_voxels, int32_t* coords, int32_t* counts,
                             int64_t* point_to_voxel, int64_t* voxel_offsets, int64_t* point_order,
                             cudaStream_t stream) {
  const Layout l = make_layout(n, nframes, params.hashed && params.max_points_per_voxel >= 0);
  if (workspace_bytes < l.total) return cudaErrorInvalidValue;
  void* ws = workspace;
  const uint64_t cells = static_cast<uint64_t>(params.grid_shape[0] * params.grid_shape[1] * params.grid_shape[2]);
  DTL_TRY(cudaMemcpyAsync(voxel_offsets, at<int64_t>(ws, l.voff), (nframes + 1) * sizeof(int64_t),
                          cudaMemcpyDeviceToDevice, stream));
  if (n == 0) return cudaSuccess;
  DTL_TRY(cudaMemsetAsync(point_to_voxel, 0xFF, n * sizeof(int64_t), stream));  // all bytes 1: -1
  emit_points_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      at<int64_t>(ws, l.keep), at<int64_t>(ws, l.out_pos), at<int64_t>(ws, l.idx), at<int64_t>(ws, l.run_of),
      at<int64_t>(ws, l.vox_new_id), n, point_order, point_to_voxel);
  DTL_TRY(cudaGetLastError());
  if (num_voxels > 0) {
    emit_voxels_kernel<<<blocks_for(num_voxels), kThreads, 0, stream>>>(
        at<int64_t>(ws, l.vox_run), at<int64_t>(ws, l.vox_count), at<uint64_t>(ws, l.unique), cells,
        params.grid_shape[0], params.grid_shape[1], num_voxels, coords, counts);
    DTL_TRY(cudaGetLastError());
  }
  return cudaSuccess;
}

cudaError_t segment_reduce_f32(const float* values, int64_t row_stride, int64_t col_stride, int64_t c,
                               const int64_t* order, const int64_t* starts, int64_t m, int64_t reduce,
                               float* out, int64_t* arg, cudaStream_t stream) {
  return segment_reduce_impl<float>(values, row_stride, col_stride, c, order, starts, m, reduce, out, arg, stream);
}

cudaError_t segment_reduce_f64(const double* values, int64_t row_stride, int64_t col_stride, int64_t c,
                               const int64_t* order, const int64_t* starts, int64_t m, int64_t reduce,
                               double* out, int64_t* arg, cudaStream_t stream) {
  return segment_reduce_impl<double>(values, row_stride, col_stride, c, order, starts, m, reduce, out, arg, stream);
}

}  // namespace drivetl_cuda
