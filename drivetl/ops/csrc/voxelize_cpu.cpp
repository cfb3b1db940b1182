// CPU kernels of the drivetl voxelization ops, registered as torch custom ops: argument checks
// and registration. The algorithm is in voxel_index_cpu.h (the voxel index, with the per-voxel
// reduction fused into its last pass), radix_sort.h and segment_cpu.h (segment_reduce,
// index_reduce, pad_voxels).
//
// The plain-torch reference (drivetl/ops/_torch_impl.py) is the specification; the tests compare
// these kernels to it bit for bit.

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "segment_cpu.h"
#include "voxel_index_cpu.h"

namespace {

using drivetl_ops::Caps;
using drivetl_ops::Grid;
using drivetl_ops::IndexOutputs;

IndexOutputs voxel_index_checked(
    const at::Tensor& points, const at::Tensor& offsets, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> range_min, c10::ArrayRef<double> range_max, c10::ArrayRef<int64_t> grid_shape,
    int64_t max_points_per_voxel, int64_t max_voxels, bool hashed, int64_t seed, int64_t reduce) {
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3, "voxel_index: points must be (N, C>=3)");
  TORCH_CHECK(points.scalar_type() == at::kFloat, "voxel_index: points must be float32");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1 && offsets.scalar_type() == at::kLong,
              "voxel_index: offsets must be int64 (B+1,)");
  TORCH_CHECK(voxel_size.size() == 3 && range_min.size() == 3 && range_max.size() == 3 && grid_shape.size() == 3,
              "voxel_index: grid arguments need 3 values each");
  TORCH_CHECK(reduce >= -1 && reduce <= 2, "voxel_index: reduce must be -1 (none), 0 (sum), 1 (mean) or 2 (max)");
  TORCH_CHECK(max_points_per_voxel == -1 || max_points_per_voxel >= 1,
              "voxel_index: max_points_per_voxel must be -1 (no cap) or >= 1");
  const int64_t n = points.size(0);
  const int64_t nframes = offsets.size(0) - 1;
  const at::Tensor off_t = offsets.contiguous();
  const int64_t* off = off_t.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[nframes] == n, "voxel_index: offsets must start at 0 and end at N");
  for (int64_t f = 0; f < nframes; ++f)
    TORCH_CHECK(off[f + 1] >= off[f] && off[f + 1] - off[f] < (int64_t(1) << 32),
                "voxel_index: offsets must be non-decreasing, with under 2^32 points per frame");
  Grid g{};
  for (int a = 0; a < 3; ++a) {
    g.mn[a] = static_cast<float>(range_min[a]);
    g.mx[a] = static_cast<float>(range_max[a]);
    g.sz[a] = static_cast<float>(voxel_size[a]);
    g.nf[a] = static_cast<float>(grid_shape[a]);
    TORCH_CHECK(grid_shape[a] >= 1 && grid_shape[a] < (int64_t(1) << 24), "voxel_index: bad grid shape");
  }
  g.nx = grid_shape[0];
  g.ny = grid_shape[1];
  g.nz = grid_shape[2];
  g.cells = static_cast<uint64_t>(g.nx * g.ny * g.nz);
  if (g.cells <= 0xFFFFFFFFull) {
    g.div_nx = drivetl_ops::Div32(static_cast<uint32_t>(g.nx));
    g.div_nxy = drivetl_ops::Div32(static_cast<uint32_t>(g.nx * g.ny));
  }
  const Caps caps{max_points_per_voxel, max_voxels, hashed,
                  drivetl_common::keep_salt(seed)};
  // Packed 8-byte elements need every cell index below the all-ones key and point indices < 2^32.
  if (g.cells <= 0xFFFFFFFFull && n < (int64_t(1) << 32))
    return drivetl_ops::voxel_index_impl<drivetl_ops::PackedElem>(points, off, nframes, g, caps, reduce);
  return drivetl_ops::voxel_index_impl<drivetl_ops::WideElem>(points, off, nframes, g, caps, reduce);
}


std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxel_index_cpu(
    const at::Tensor& points, const at::Tensor& offsets, c10::ArrayRef<double> voxel_size,
    c10::ArrayRef<double> range_min, c10::ArrayRef<double> range_max, c10::ArrayRef<int64_t> grid_shape,
    int64_t max_points_per_voxel, int64_t max_voxels, bool hashed, int64_t seed) {
  auto out = voxel_index_checked(points, offsets, voxel_size, range_min, range_max, grid_shape,
                                 max_points_per_voxel, max_voxels, hashed, seed, -1);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out), std::get<4>(out)};
}

IndexOutputs voxel_index_reduce_cpu(const at::Tensor& points, const at::Tensor& offsets,
                                    c10::ArrayRef<double> voxel_size, c10::ArrayRef<double> range_min,
                                    c10::ArrayRef<double> range_max, c10::ArrayRef<int64_t> grid_shape,
                                    int64_t max_points_per_voxel, int64_t max_voxels, bool hashed, int64_t seed,
                                    int64_t reduce) {
  TORCH_CHECK(reduce >= 0 && reduce <= 2, "voxel_index_reduce: reduce must be 0 (sum), 1 (mean) or 2 (max)");
  return voxel_index_checked(points, offsets, voxel_size, range_min, range_max, grid_shape, max_points_per_voxel,
                             max_voxels, hashed, seed, reduce);
}

}  // namespace

TORCH_LIBRARY(drivetl_ops, m) {
  // The fake (shape-only) and autograd registrations live in Python, in this module.
  m.set_python_module("drivetl.ops._backend");
  m.def(
      "voxel_index(Tensor points, Tensor offsets, float[] voxel_size, float[] range_min, float[] range_max, "
      "int[] grid_shape, int max_points_per_voxel, int max_voxels, bool hashed, int seed) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The same index with the segment reduction of every point column fused in (CPU only):
  // (coords, counts, point_to_voxel, voxel_offsets, point_order, features).
  m.def(
      "voxel_index_reduce(Tensor points, Tensor offsets, float[] voxel_size, float[] range_min, "
      "float[] range_max, int[] grid_shape, int max_points_per_voxel, int max_voxels, bool hashed, int seed, "
      "int reduce) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("segment_reduce(Tensor values, Tensor point_order, Tensor counts, int reduce) -> (Tensor, Tensor)");
  m.def("index_reduce(Tensor values, Tensor index, int num_segments, int reduce) -> (Tensor, Tensor)");
  m.def("pad_voxels(Tensor points, Tensor point_order, Tensor counts, int k) -> Tensor");
}

TORCH_LIBRARY_IMPL(drivetl_ops, CPU, m) {
  m.impl("voxel_index", &voxel_index_cpu);
  m.impl("voxel_index_reduce", &voxel_index_reduce_cpu);
  m.impl("segment_reduce", &drivetl_ops::segment_reduce_cpu);
  m.impl("index_reduce", &drivetl_ops::index_reduce_cpu);
  m.impl("pad_voxels", &drivetl_ops::pad_voxels_cpu);
}
