// Torch binding of the CUDA kernels: tensors in, raw pointers + the current stream to
// voxelize_cuda.cu, tensors out. Registers the CUDA implementations of the drivetl_ops ops whose
// schemas voxelize_cpu.cpp defines. Compiled only where torch has CUDA.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "voxelize_cuda.h"

namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "drivetl_ops ", what, " failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxel_index_cuda(
    const at::Tensor& points, const at::Tensor& offsets, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> range_min, c10::ArrayRef<double> range_max, c10::ArrayRef<int64_t> grid_shape,
    int64_t max_points_per_voxel, int64_t max_voxels, bool hashed, int64_t seed) {
  TORCH_CHECK(points.is_cuda() && offsets.is_cuda(), "voxel_index: points and offsets must be CUDA tensors");
  TORCH_CHECK(offsets.device() == points.device(), "voxel_index: points and offsets must be on the same device");
  TORCH_CHECK(voxel_size.size() == 3 && range_min.size() == 3 && range_max.size() == 3 && grid_shape.size() == 3,
              "voxel_index: grid arguments need 3 values each");
  for (int a = 0; a < 3; ++a)
    TORCH_CHECK(grid_shape[a] >= 1 && grid_shape[a] < (int64_t(1) << 24), "voxel_index: bad grid shape");
  // The offsets' values (0 first, N last, non-decreasing) are checked by the Python caller
  // (drivetl.ops._dispatch.check_batch); checking them here would cost a device sync per call.
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3 && points.scalar_type() == at::kFloat,
              "voxel_index: points must be float32 (N, C>=3)");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1 && offsets.scalar_type() == at::kLong,
              "voxel_index: offsets must be int64 (B+1,)");
  TORCH_CHECK(points.size(0) < (int64_t(1) << 31) - 1, "voxel_index: fewer than 2^31 - 1 points per call on CUDA");
  TORCH_CHECK(max_points_per_voxel == -1 || max_points_per_voxel >= 1,
              "voxel_index: max_points_per_voxel must be -1 (no cap) or >= 1");
  const c10::cuda::CUDAGuard guard(points.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  drivetl_cuda::VoxelParams p{};
  for (int a = 0; a < 3; ++a) {
    p.range_min[a] = static_cast<float>(range_min[a]);
    p.range_max[a] = static_cast<float>(range_max[a]);
    p.voxel_size[a] = static_cast<float>(voxel_size[a]);
    p.grid_shape[a] = grid_shape[a];
  }
  p.max_points_per_voxel = max_points_per_voxel;
  p.max_voxels = max_voxels;
  p.hashed = hashed;
  p.seed = seed;
  const int64_t n = points.size(0), nframes = offsets.size(0) - 1;
  const at::Tensor off = offsets.contiguous();
  const size_t ws_bytes = drivetl_cuda::voxel_index_workspace_bytes(n, nframes, p);
  at::Tensor ws = at::empty({static_cast<int64_t>(ws_bytes)}, points.options().dtype(at::kByte));
  int64_t m = 0, kept = 0;
  int32_t non_finite = 0;
  check_cuda(drivetl_cuda::voxel_index_plan(points.data_ptr<float>(), points.stride(0), points.stride(1), n,
                                            off.data_ptr<int64_t>(), nframes, p, ws.data_ptr(), ws_bytes, &m, &kept,
                                            &non_finite, stream),
             "voxel_index (plan)");
  TORCH_CHECK(!non_finite, "voxel_index: non-finite point coordinates (NaN or inf in x, y or z)");
  const auto lopt = points.options().dtype(at::kLong);
  at::Tensor coords = at::empty({m, 4}, points.options().dtype(at::kInt));
  at::Tensor counts = at::empty({m}, points.options().dtype(at::kInt));
  at::Tensor p2v = at::empty({n}, lopt);
  at::Tensor voff = at::empty({nframes + 1}, lopt);
  at::Tensor order = at::empty({kept}, lopt);
  check_cuda(drivetl_cuda::voxel_index_emit(n, nframes, p, ws.data_ptr(), ws_bytes, m, coords.data_ptr<int32_t>(),
                                            counts.data_ptr<int32_t>(), p2v.data_ptr<int64_t>(),
                                            voff.data_ptr<int64_t>(), order.data_ptr<int64_t>(), stream),
             "voxel_index (emit)");
  return {coords, counts, p2v, voff, order};
}

std::tuple<at::Tensor, at::Tensor> segment_reduce_cuda(const at::Tensor& values, const at::Tensor& point_order,
                                                        const at::Tensor& counts, int64_t reduce) {
  TORCH_CHECK(values.is_cuda() && point_order.is_cuda() && counts.is_cuda(),
              "segment_reduce: tensors must be on CUDA");
  TORCH_CHECK(point_order.device() == values.device() && counts.device() == values.device(),
              "segment_reduce: values, point_order and counts must be on the same device");
  TORCH_CHECK(values.dim() == 2, "segment_reduce: values must be (N, C)");
  TORCH_CHECK(counts.dim() == 1 && !at::isFloatingType(counts.scalar_type()),
              "segment_reduce: counts must be integer (M,)");
  TORCH_CHECK(point_order.dim() == 1 && point_order.scalar_type() == at::kLong,
              "segment_reduce: point_order must be int64 (P,)");
  TORCH_CHECK(reduce >= 0 && reduce <= 2, "segment_reduce: reduce must be 0 (sum), 1 (mean) or 2 (max)");
  const c10::cuda::CUDAGuard guard(values.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t m = counts.size(0), c = values.size(1);
  at::Tensor starts = at::zeros({m + 1}, point_order.options());
  if (m > 0) starts.narrow(0, 1, m).copy_(at::cumsum(counts.to(at::kLong), 0));
  const at::Tensor ord = point_order.contiguous();
  at::Tensor out = at::empty({m, c}, values.options());
  const std::vector<int64_t> arg_shape = reduce == 2 ? std::vector<int64_t>{m, c} : std::vector<int64_t>{0};
  at::Tensor arg = at::empty(arg_shape, values.options().dtype(at::kLong));
  int64_t* arg_ptr = reduce == 2 ? arg.data_ptr<int64_t>() : nullptr;
  cudaError_t err;
  if (values.scalar_type() == at::kFloat) {
    err = drivetl_cuda::segment_reduce_f32(values.data_ptr<float>(), values.stride(0), values.stride(1), c,
                                           ord.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), m, reduce,
                                           out.data_ptr<float>(), arg_ptr, stream);
  } else if (values.scalar_type() == at::kDouble) {
    err = drivetl_cuda::segment_reduce_f64(values.data_ptr<double>(), values.stride(0), values.stride(1), c,
                                           ord.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), m, reduce,
                                           out.data_ptr<double>(), arg_ptr, stream);
  } else {
    TORCH_CHECK(false, "segment_reduce: values must be float32 or float64 on CUDA");
  }
  check_cuda(err, "segment_reduce");
  return {out, arg};
}

}  // namespace

TORCH_LIBRARY_IMPL(drivetl_ops, CUDA, m) {
  m.impl("voxel_index", &voxel_index_cuda);
  m.impl("segment_reduce", &segment_reduce_cuda);
}
