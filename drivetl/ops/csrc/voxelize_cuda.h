// Plain CUDA C++ interface of the drivetl voxelization kernels (no torch types).
//
// The kernels in voxelize_cuda.cu take raw device pointers and a cudaStream_t, so they compile
// with `nvcc -c` alone; voxelize_cuda_binding.cpp adapts them to torch tensors and registers
// them as the CUDA implementations of the drivetl_ops custom ops.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace drivetl_cuda {

struct VoxelParams {
  float range_min[3];
  float range_max[3];
  float voxel_size[3];
  int64_t grid_shape[3];         // cells along x, y, z
  int64_t max_points_per_voxel;  // -1: no cap
  int64_t max_voxels;            // per frame; -1: no cap
  bool hashed;                   // keep="hashed" (else "first")
  int64_t seed;
};

// Bytes of scratch memory voxel_index_plan/voxel_index_emit need for n points and nframes frames.
size_t voxel_index_workspace_bytes(int64_t n, int64_t nframes, const VoxelParams& params);

// Phase 1: keys, stable sort, voxel runs, caps. Synchronizes `stream` once to return the number
// of voxels (*num_voxels) and of kept points (*num_kept) so the caller can allocate outputs, and
// whether any x, y or z was NaN or inf (*non_finite; such points are treated as outside the grid).
// points: (n, >=3) float32 with strides (row_stride, col_stride) in elements; offsets: (nframes+1,)
// int64 on the device.
cudaError_t voxel_index_plan(const float* points, int64_t row_stride, int64_t col_stride, int64_t n,
                             const int64_t* offsets, int64_t nframes, const VoxelParams& params,
                             void* workspace, size_t workspace_bytes, int64_t* num_voxels, int64_t* num_kept,
                             int32_t* non_finite, cudaStream_t stream);

// Phase 2: write the outputs (coords (M,4) int32, counts (M,) int32, point_to_voxel (n,) int64,
// voxel_offsets (nframes+1,) int64, point_order (P,) int64) from the planned workspace.
cudaError_t voxel_index_emit(int64_t n, int64_t nframes, const VoxelParams& params, void* workspace,
                             size_t workspace_bytes, int64_t num_voxels, int32_t* coords, int32_t* counts,
                             int64_t* point_to_voxel, int64_t* voxel_offsets, int64_t* point_order,
                             cudaStream_t stream);

// Grouped reduction: segment s owns rows order[starts[s]:starts[s+1]] of values (row/col strides in
// elements, c channels). reduce: 0 sum, 1 mean, 2 max (arg: first row attaining the max, -1 if empty).
cudaError_t segment_reduce_f32(const float* values, int64_t row_stride, int64_t col_stride, int64_t c,
                               const int64_t* order, const int64_t* starts, int64_t m, int64_t reduce,
                               float* out, int64_t* arg, cudaStream_t stream);
cudaError_t segment_reduce_f64(const double* values, int64_t row_stride, int64_t col_stride, int64_t c,
                               const int64_t* order, const int64_t* starts, int64_t m, int64_t reduce,
                               double* out, int64_t* arg, cudaStream_t stream);

}  // namespace drivetl_cuda
