// CPU kernels of the drivetl voxelization ops, registered as torch custom ops.
//
// Design: sort-based, no table sized to the grid; memory is O(points). Frames are independent.
// 1. Keys: one branch-free (vectorized) pass computes each point's cell, floor((p - min) / size)
//    in float32 exactly as the reference, and writes the valid points, in input order, as
//    (linear cell index << 32 | point index) words (16-byte pairs for grids of 2^32 cells or more).
// 2. Sort: a stable LSD radix sort (radix_sort.h) on only the bits a cell index can have (27 for
//    Waymo's 0.1 m grid: 3 passes of 9 bits; 18 for 0.32 m pillars: 2 passes) groups the points by
//    voxel, input order kept inside a voxel. Runs of equal keys are the voxels.
// 3. Count (branch-free) sizes the outputs exactly; write fills them, decoding cells with
//    multiply-based division (a hardware divide per voxel would cost more than the sort).
// Threads: a batch gives whole frames to threads; one large frame is split after the key pass
// into key ranges of about equal size (a histogram of the keys' top bits, a stable scatter), then
// each thread sorts, counts and writes its own range; no voxel straddles two ranges. Two
// barriers per call, so it degrades gracefully when the cores are busy. Scratch memory is kept
// per calling thread between calls. Every floating-point reduction (segment_cpu.h) is a
// sequential loop over one voxel's points in a fixed order, so results do not depend on threads.
//
// The plain-torch reference (drivetl/ops/_torch_impl.py) is the specification; the tests compare
// these kernels to it bit for bit.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "radix_sort.h"
#include "segment_cpu.h"

namespace {

constexpr int64_t kParallelMin = 32768;  // below this many points a fork/join costs more than it saves
constexpr int64_t kBlock = 512;          // key-pass block: keys are compacted while still in L1

inline uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

inline int bit_width(uint64_t x) {
  int b = 0;
  for (; x; x >>= 1) ++b;
  return b;
}

// Exact a / d for 32-bit a and d >= 2 by one multiply (Lemire, Kaser & Kurz 2019, "Faster
// remainder by direct computation"): M = floor((2^64 - 1) / d) + 1, a / d = (M * a) >> 64.
struct Div32 {
  uint64_t m = 0;
  uint32_t d = 1;
  Div32() = default;
  explicit Div32(uint32_t d_) : m(d_ > 1 ? ~uint64_t(0) / d_ + 1 : 0), d(d_) {}
  uint32_t operator()(uint32_t a) const {
    return d > 1 ? static_cast<uint32_t>((static_cast<unsigned __int128>(m) * a) >> 64) : a;
  }
};

struct Grid {
  float mn[3], mx[3], sz[3], nf[3];
  int64_t nx, ny, nz;
  uint64_t cells;
  Div32 div_nx, div_nxy;  // used when cells < 2^32
};

// Grow-only scratch memory of the calling thread, reused across calls (no page faults per call).
template <class T>
T* scratch(std::unique_ptr<T[]>& buf, size_t& cap, size_t n) {
  if (n > cap || cap > 4 * n + (size_t(1) << 22)) {  // grow, or give back a much larger buffer
    buf.reset(new T[std::max<size_t>(n, 1)]);
    cap = std::max<size_t>(n, 1);
  }
  return buf.get();
}

// Keys of points [lo, hi): floor((p - min) / size) in float32 (subtraction, then true division,
// as the reference), kInvalid for points outside the half-open range. Returns whether any x, y or
// z is NaN or inf. RS > 0: compile-time row stride with contiguous columns (vectorizes).
template <class Key, int RS>
bool keys_block(const float* pts, int64_t rs, int64_t cs, int64_t lo, int64_t hi, const Grid& g, Key* out) {
  const float mnx = g.mn[0], mny = g.mn[1], mnz = g.mn[2], mxx = g.mx[0], mxy = g.mx[1], mxz = g.mx[2];
  const float szx = g.sz[0], szy = g.sz[1], szz = g.sz[2], nfx = g.nf[0], nfy = g.nf[1], nfz = g.nf[2];
  const Key nx = static_cast<Key>(g.nx), ny = static_cast<Key>(g.ny);
  const int64_t row = RS > 0 ? RS : rs, col = RS > 0 ? 1 : cs;
  int bad = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const float* p = pts + i * row;
    const float x = p[0], y = p[col], z = p[2 * col];
    bad |= ((x - x) != 0.0f) | ((y - y) != 0.0f) | ((z - z) != 0.0f);  // NaN or inf
    const float fx = (x - mnx) / szx, fy = (y - mny) / szy, fz = (z - mnz) / szz;
    // For an inside point (p >= min) the quotient is >= 0, where floor equals truncation and
    // floor(f) < n equals f < n; outside points are masked before the conversion.
    const bool ok = (x >= mnx) & (x < mxx) & (fx < nfx) & (y >= mny) & (y < mxy) & (fy < nfy) & (z >= mnz) &
                    (z < mxz) & (fz < nfz);
    const Key qx = static_cast<Key>(static_cast<int32_t>(ok ? fx : 0.0f));
    const Key qy = static_cast<Key>(static_cast<int32_t>(ok ? fy : 0.0f));
    const Key qz = static_cast<Key>(static_cast<int32_t>(ok ? fz : 0.0f));
    out[i] = ok ? (qz * ny + qy) * nx + qx : static_cast<Key>(~Key(0));
  }
  return bad != 0;
}

template <class Key>
bool keys_range(const float* pts, int64_t rs, int64_t cs, int64_t lo, int64_t hi, const Grid& g, Key* out) {
  if (cs == 1 && rs == 4) return keys_block<Key, 4>(pts, rs, cs, lo, hi, g, out);
  if (cs == 1 && rs == 3) return keys_block<Key, 3>(pts, rs, cs, lo, hi, g, out);
  return keys_block<Key, 0>(pts, rs, cs, lo, hi, g, out);
}

struct Caps {
  int64_t k, max_voxels;
  bool hashed;
  uint32_t salt;
};

// A sorted slice of one frame holding whole voxels (runs of equal keys), in key order.
template <class E>
struct Chunk {
  const typename E::Elem* s = nullptr;
  int64_t len = 0, runs = 0, pts = 0;  // elements, voxels, kept points (before max_voxels)
};

template <class E>
struct Frame {
  std::vector<Chunk<E>> chunks;
  std::vector<int64_t> run_base, pt_base;  // first voxel / kept point of each chunk, in the frame
  int64_t voxels = 0, kept = 0;
};

// Computes the keys of points [lo, hi) of the batch and writes the valid ones, in input order, as
// sort elements to out. `bins` (optional, with one extra slot for invalid points) counts the keys'
// top bits. Returns the number written.
template <class E>
int64_t compact_keys(const float* pts, int64_t rs, int64_t cs, int64_t lo, int64_t hi, const Grid& g,
                     typename E::Elem* out, uint32_t* bins, int bin_shift, int nbins, bool& bad) {
  using Key = typename E::Key;
  Key kb[kBlock];
  int64_t w = 0;
  for (int64_t s = lo; s < hi; s += kBlock) {
    const int64_t len = std::min(kBlock, hi - s);
    bad = keys_range<Key>(pts + s * rs, rs, cs, 0, len, g, kb) || bad;
    for (int64_t i = 0; i < len; ++i) {
      const Key k = kb[i];
      const bool ok = k != E::kInvalid;
      out[w] = E::make(k, s + i);
      w += ok;
      if (bins) ++bins[ok ? static_cast<int>(k >> bin_shift) : nbins];
    }
  }
  return w;
}

// Voxels and kept points of a chunk's first `max_runs` runs.
template <class E>
void count_runs(Chunk<E>& c, int64_t k, int64_t max_runs) {
  int64_t r = 0, p = 0;
  if (max_runs == INT64_MAX) {  // the whole chunk, branch-free (runs are short and irregular)
    if (c.len == 0) {
      c.runs = c.pts = 0;
      return;
    }
    auto prev = E::key(c.s[0]);
    int64_t pos = 0;
    r = p = 1;
    for (int64_t i = 1; i < c.len; ++i) {
      const auto cur = E::key(c.s[i]);
      const int64_t same = cur == prev;
      prev = cur;
      r += 1 - same;
      pos = (pos + 1) & -same;  // position inside the run
      p += pos < k;
    }
    c.runs = r;
    c.pts = k >= 0 ? p : c.len;
    return;
  }
  for (int64_t i = 0; i < c.len && r < max_runs; ++r) {
    const auto key = E::key(c.s[i]);
    int64_t e = i + 1;
    while (e < c.len && E::key(c.s[e]) == key) ++e;
    p += k >= 0 ? std::min(e - i, k) : e - i;
    i = e;
  }
  c.runs = r;
  c.pts = p;
}

// Chunk bases within the frame; max_voxels keeps the frame's first voxels.
template <class E>
void finish_frame(Frame<E>& fr, const Caps& caps) {
  const size_t nc = fr.chunks.size();
  fr.run_base.assign(nc + 1, 0);
  fr.pt_base.assign(nc + 1, 0);
  for (size_t t = 0; t < nc; ++t) {
    Chunk<E>& c = fr.chunks[t];
    const int64_t base = fr.run_base[t];
    if (caps.max_voxels >= 0 && base + c.runs > caps.max_voxels) count_runs(c, caps.k, std::max<int64_t>(0, caps.max_voxels - base));
    fr.run_base[t + 1] = base + c.runs;
    fr.pt_base[t + 1] = fr.pt_base[t] + c.pts;
  }
  fr.voxels = fr.run_base[nc];
  fr.kept = fr.pt_base[nc];
}

// Frame [lo, hi) of the batch on the calling thread: one chunk.
template <class E>
void sort_frame(const float* pts, int64_t rs, int64_t cs, int64_t lo, int64_t hi, const Grid& g, int bits,
                typename E::Elem* a, typename E::Elem* b, const Caps& caps, Frame<E>& fr, bool& bad) {
  const int64_t nv = compact_keys<E>(pts, rs, cs, lo, hi, g, a + lo, nullptr, 0, 0, bad);
  Chunk<E> c;
  c.s = drivetl_ops::lsd_sort<E>(a + lo, b + lo, nv, bits);
  c.len = nv;
  count_runs(c, caps.k, INT64_MAX);
  fr.chunks.assign(1, c);
}

// One large frame [0, n) on nt threads: each thread keys its slice of the points; the valid
// elements are split into nt key ranges of about equal size (by a histogram of the keys' top
// bits) with a stable scatter; each thread then sorts and counts its own range. Two barriers.
template <class E>
void sort_frame_parallel(const float* pts, int64_t rs, int64_t cs, int64_t n, const Grid& g, int bits,
                         typename E::Elem* a, typename E::Elem* b, const Caps& caps, int nt, Frame<E>& fr,
                         bool& bad_out) {
  using Elem = typename E::Elem;
  const int top = std::min(bits, 11), shift = bits - top, nbins = 1 << top;
  std::vector<uint32_t> bins(static_cast<size_t>(nt) * (nbins + 1), 0);
  std::vector<int64_t> written(nt, 0), part_of_bin(nbins, 0), part_start(nt + 1, 0);
  std::vector<int64_t> offs(static_cast<size_t>(nt) * nt, 0);  // [thread][part] write offsets
  fr.chunks.assign(nt, Chunk<E>{});
  bool bad = false;
#pragma omp parallel num_threads(nt) reduction(|| : bad)
  {
    const int t = omp_get_thread_num();
    const int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
    uint32_t* mine = bins.data() + static_cast<size_t>(t) * (nbins + 1);
    written[t] = compact_keys<E>(pts, rs, cs, lo, hi, g, a + lo, mine, shift, nbins, bad);
#pragma omp barrier
#pragma omp single
    {
      int64_t nv = 0;
      for (int u = 0; u < nt; ++u) nv += written[u];
      // Part p takes the bins whose running total starts below nv * (p + 1) / nt.
      int64_t cum = 0;
      int p = 0;
      for (int bin = 0; bin < nbins; ++bin) {
        while (p < nt - 1 && cum >= nv * (p + 1) / nt) ++p;
        part_of_bin[bin] = p;
        for (int u = 0; u < nt; ++u) cum += bins[static_cast<size_t>(u) * (nbins + 1) + bin];
      }
      // Offsets part-major, then thread-major: the scatter is stable.
      std::vector<int64_t> cnt(static_cast<size_t>(nt) * nt, 0);
      for (int u = 0; u < nt; ++u)
        for (int bin = 0; bin < nbins; ++bin)
          cnt[static_cast<size_t>(u) * nt + part_of_bin[bin]] += bins[static_cast<size_t>(u) * (nbins + 1) + bin];
      int64_t sum = 0;
      for (int q = 0; q < nt; ++q) {
        part_start[q] = sum;
        for (int u = 0; u < nt; ++u) {
          offs[static_cast<size_t>(u) * nt + q] = sum;
          sum += cnt[static_cast<size_t>(u) * nt + q];
        }
      }
      part_start[nt] = sum;
    }
    int64_t* o = offs.data() + static_cast<size_t>(t) * nt;
    for (int64_t i = lo; i < lo + written[t]; ++i) {
      const Elem e = a[i];
      b[o[part_of_bin[E::key(e) >> shift]]++] = e;
    }
#pragma omp barrier
    Chunk<E>& c = fr.chunks[t];
    c.len = part_start[t + 1] - part_start[t];
    c.s = drivetl_ops::lsd_sort<E>(b + part_start[t], a + part_start[t], c.len, bits);
    count_runs(c, caps.k, INT64_MAX);
  }
  bad_out = bad_out || bad;
}

struct Out {
  int32_t* coords;
  int32_t* counts;
  int64_t* p2v;
  int64_t* order;
};

inline void write_coords(int32_t* co, int64_t f, uint64_t lin, const Grid& g) {
  co[0] = static_cast<int32_t>(f);
  if (g.cells <= 0xFFFFFFFFull) {  // a hardware division would cost more than the rest of the kernel
    const uint32_t nx = static_cast<uint32_t>(g.nx), nxy = static_cast<uint32_t>(g.nx * g.ny);
    const uint32_t l = static_cast<uint32_t>(lin), z = g.div_nxy(l), rem = l - z * nxy, y = g.div_nx(rem);
    co[1] = static_cast<int32_t>(z);
    co[2] = static_cast<int32_t>(y);
    co[3] = static_cast<int32_t>(rem - y * nx);
  } else {
    co[1] = static_cast<int32_t>(lin / uint64_t(g.nx * g.ny));
    co[2] = static_cast<int32_t>((lin / uint64_t(g.nx)) % uint64_t(g.ny));
    co[3] = static_cast<int32_t>(lin % uint64_t(g.nx));
  }
}

// Writes chunk t of frame f: coords, counts, point order and point -> voxel of its runs.
// `scratch` holds the chunk's run starts (first K points), or (hash, index) pairs (hashed K).
template <class E>
void write_chunk(const Frame<E>& fr, size_t t, int64_t f, int64_t frame_start, int64_t vbase, int64_t pbase,
                 const Grid& g, const Caps& caps, const Out& o, std::vector<int64_t>& starts,
                 std::vector<std::pair<uint32_t, int64_t>>& ranked) {
  const Chunk<E>& c = fr.chunks[t];
  const auto* s = c.s;
  const int64_t v0 = vbase + fr.run_base[t], nvox = fr.run_base[t + 1] - fr.run_base[t];
  int64_t w = pbase + fr.pt_base[t];
  if (caps.hashed && caps.k >= 0) {  // per run: the K lowest (hash, index) pairs, in input order
    int64_t i = 0;
    for (int64_t v = v0; v < v0 + nvox; ++v) {
      const auto k = E::key(s[i]);
      int64_t e = i + 1;
      while (e < c.len && E::key(s[e]) == k) ++e;
      write_coords(o.coords + 4 * v, f, k, g);
      const int64_t len = e - i, keep = std::min(len, caps.k);
      o.counts[v] = static_cast<int32_t>(keep);
      ranked.clear();
      for (int64_t j = i; j < e; ++j) {
        const int64_t pt = E::index(s[j]);
        ranked.emplace_back(fmix32(static_cast<uint32_t>(pt - frame_start) ^ caps.salt), pt);
      }
      std::nth_element(ranked.begin(), ranked.begin() + (keep - 1), ranked.end());
      const std::pair<uint32_t, int64_t> cut = ranked[keep - 1];
      for (int64_t j = i; j < e; ++j) {
        const int64_t pt = E::index(s[j]);
        if (std::make_pair(fmix32(static_cast<uint32_t>(pt - frame_start) ^ caps.salt), pt) <= cut) {
          o.order[w++] = pt;
          o.p2v[pt] = v;
        }
      }
      i = e;
    }
    return;
  }
  // Points first, branch-free over run boundaries (runs are short and irregular); the run starts
  // are recorded (slot nvox + 1 absorbs the non-boundary writes), then each voxel is written.
  starts.resize(nvox + 2);
  int64_t* st = starts.data();
  const int64_t k = caps.k >= 0 ? caps.k : INT64_MAX;
  int64_t r = -1, pos = 0, i = 0;
  auto prev = c.len ? ~E::key(s[0]) : 0;  // differs from the first key: it starts a run
  for (; i < c.len; ++i) {
    const auto cur = E::key(s[i]);
    const int64_t same = cur == prev;
    prev = cur;
    r += 1 - same;
    if (r == nvox) break;  // max_voxels reached
    pos = (pos + 1) & -same;
    st[same ? nvox + 1 : r] = i;
    const int64_t pt = E::index(s[i]);
    if (pos < k) {
      o.order[w++] = pt;
      o.p2v[pt] = v0 + r;
    }
  }
  st[nvox] = i;
  for (int64_t j = 0; j < nvox; ++j) {
    write_coords(o.coords + 4 * (v0 + j), f, E::key(s[st[j]]), g);
    o.counts[v0 + j] = static_cast<int32_t>(std::min(st[j + 1] - st[j], k));
  }
}

template <class E>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> voxel_index_impl(
    const at::Tensor& points, const int64_t* off, int64_t nframes, const Grid& g, const Caps& caps) {
  using Elem = typename E::Elem;
  const int64_t n = points.size(0);
  const float* pts = points.data_ptr<float>();
  const int64_t rs = points.stride(0), cs = points.stride(1);
  thread_local std::unique_ptr<Elem[]> a_buf, b_buf;
  thread_local size_t a_cap = 0, b_cap = 0;
  Elem* a = scratch(a_buf, a_cap, n);
  Elem* b = scratch(b_buf, b_cap, n);
  const int bits = bit_width(g.cells - 1);
  const int nt_all = n >= kParallelMin ? std::max(1, at::get_num_threads()) : 1;
  const bool by_frame = nt_all > 1 && nframes >= 2;  // whole frames per thread
  std::vector<Frame<E>> frames(nframes);
  bool bad = false;
  if (nt_all > 1 && nframes == 1) {
    sort_frame_parallel<E>(pts, rs, cs, n, g, bits, a, b, caps, nt_all, frames[0], bad);
  } else {
#pragma omp parallel for num_threads(nt_all) if (by_frame) schedule(dynamic, 1) reduction(|| : bad)
    for (int64_t f = 0; f < nframes; ++f)
      sort_frame<E>(pts, rs, cs, off[f], off[f + 1], g, bits, a, b, caps, frames[f], bad);
  }
  TORCH_CHECK(!bad, "voxel_index: non-finite point coordinates (NaN or inf in x, y or z)");

  std::vector<int64_t> vbase(nframes + 1, 0), pbase(nframes + 1, 0);
  for (int64_t f = 0; f < nframes; ++f) {
    finish_frame(frames[f], caps);
    vbase[f + 1] = vbase[f] + frames[f].voxels;
    pbase[f + 1] = pbase[f] + frames[f].kept;
  }
  const int64_t m = vbase[nframes], np = pbase[nframes];
  const auto lopt = points.options().dtype(at::kLong);
  at::Tensor coords = at::empty({m, 4}, points.options().dtype(at::kInt));
  at::Tensor counts = at::empty({m}, points.options().dtype(at::kInt));
  at::Tensor p2v = at::empty({n}, lopt);
  at::Tensor voff = at::empty({nframes + 1}, lopt);
  at::Tensor order = at::empty({np}, lopt);
  std::copy(vbase.begin(), vbase.end(), voff.data_ptr<int64_t>());
  const Out o{coords.data_ptr<int32_t>(), counts.data_ptr<int32_t>(), p2v.data_ptr<int64_t>(),
              order.data_ptr<int64_t>()};
  // One task per chunk: (frame, chunk) pairs in order.
  std::vector<std::pair<int64_t, int64_t>> tasks;
  for (int64_t f = 0; f < nframes; ++f)
    for (size_t t = 0; t < frames[f].chunks.size(); ++t) tasks.emplace_back(f, static_cast<int64_t>(t));
  const int64_t ntasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel num_threads(nt_all) if (nt_all > 1)
  {
    std::vector<std::pair<uint32_t, int64_t>> ranked;
    std::vector<int64_t> starts;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) o.p2v[i] = -1;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t f = tasks[task].first;
      write_chunk<E>(frames[f], static_cast<size_t>(tasks[task].second), f, off[f], vbase[f], pbase[f], g, caps,
                     o, starts, ranked);
    }
  }
  return {coords, counts, p2v, voff, order};
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
    g.div_nx = Div32(static_cast<uint32_t>(g.nx));
    g.div_nxy = Div32(static_cast<uint32_t>(g.nx * g.ny));
  }
  const Caps caps{max_points_per_voxel, max_voxels, hashed,
                  fmix32(static_cast<uint32_t>((static_cast<uint64_t>(seed) + 0x9E3779B9ull) & 0xFFFFFFFFull))};
  // Packed 8-byte elements need every cell index below the all-ones key and point indices < 2^32.
  if (g.cells <= 0xFFFFFFFFull && n < (int64_t(1) << 32))
    return voxel_index_impl<drivetl_ops::PackedElem>(points, off, nframes, g, caps);
  return voxel_index_impl<drivetl_ops::WideElem>(points, off, nframes, g, caps);
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
  m.def("index_reduce(Tensor values, Tensor index, int num_segments, int reduce) -> (Tensor, Tensor)");
  m.def("pad_voxels(Tensor points, Tensor point_order, Tensor counts, int k) -> Tensor");
}

TORCH_LIBRARY_IMPL(drivetl_ops, CPU, m) {
  m.impl("voxel_index", &voxel_index_cpu);
  m.impl("segment_reduce", &drivetl_ops::segment_reduce_cpu);
  m.impl("index_reduce", &drivetl_ops::index_reduce_cpu);
  m.impl("pad_voxels", &drivetl_ops::pad_voxels_cpu);
}
