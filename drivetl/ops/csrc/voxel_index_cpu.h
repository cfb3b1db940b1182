// The CPU voxel index, with the per-voxel reduction fused into its last pass. Included by
// voxelize_cpu.cpp, which checks the arguments and registers the ops.
//
// Design: sort-based, no table sized to the grid; memory is O(points). Frames are independent.
// 1. Keys: one branch-free (vectorized) pass computes each point's cell, floor((p - min) / size)
//    in float32 exactly as the reference, as a linear index (z * ny + y) * nx + x; one read per
//    radix pass counts the digits of the valid keys.
// 2. Sort: a stable LSD radix sort (radix_sort.h) on only the bits a cell index can have (27 for
//    Waymo's 0.1 m grid: 2 passes of 14 bits; 18 for 0.32 m pillars: 2 passes of 9). Its first
//    scatter builds the (key, point) elements from the key array. Runs of equal keys are the
//    voxels, input order kept inside each.
// 3. Walk: one branch-free read of the sorted elements writes the point order and point ->
//    voxel, and reduces each voxel's kept points while their rows are gathered (prefetched
//    ahead): sequentially, in input order, as the reference does, so the features are
//    bit-identical to segment_reduce over the same grouping; then coordinates (multiply-based
//    division: a hardware divide per voxel would cost more than the sort) and counts per voxel.
//    (Folding the rows in a separate pass in point order, reading them sequentially, measured
//    slower: the voxel rows are then updated in random order.)
// Threads: on one thread (one frame, or a batch without threads), frames are sorted and walked
// one after the other while each frame's data is in cache (see voxel_index_impl for how the
// outputs get their exact sizes). With threads, a batch gives whole frames to threads in two parallel loops: keys
// + sort + a branch-free count of each frame's voxels and kept points (sizes the outputs), then
// the walks into each frame's slices. One frame runs on one thread: splitting a 180k-point frame
// measured no faster on two cores, the key pass and the scatters being bound by memory. Scratch
// memory is kept per thread between calls, sized to one frame (the sorted frames of a threaded
// batch: to the batch).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops_common.h"
#include "radix_sort.h"

namespace drivetl_ops {

constexpr int64_t kParallelMin = 32768;  // below this many points a fork/join costs more than it saves
constexpr int64_t kKeyBlock = 512;       // key-pass block: keys are checked while still in L1
constexpr int64_t kGatherAhead = 64;     // sorted elements whose rows are prefetched ahead of the walk

using drivetl_common::bit_width;
using drivetl_common::fmix32;

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

struct Caps {
  int64_t k, max_voxels;  // -1: no cap
  bool hashed;
  uint32_t salt;
};

// reduce: -1 none (index only), 0 sum, 1 mean, 2 max (the codes of _torch_impl.REDUCE_CODES).
struct LateVoxels;

struct Out {
  int32_t* coords;
  int32_t* counts;
  int64_t* p2v;
  int64_t* order;
  float* feat;  // (M, C) when reducing
  LateVoxels* late = nullptr;  // set: coords, counts and feat are allocated once M is known
};

// Scratch memory of one thread (the caller's or an OpenMP worker's), reused across frames and
// calls (no page faults per call): grows as needed, and gives back a buffer far larger than asked.
template <class T>
T* scratch(std::unique_ptr<T[]>& buf, size_t& cap, size_t n) {
  if (n > cap || cap > 4 * n + (size_t(1) << 22)) {  // grow, or give back a much larger buffer
    buf.reset(new T[std::max<size_t>(n, 1)]);
    cap = std::max<size_t>(n, 1);
  }
  return buf.get();
}

// Keys of points [0, len) of `pts`: floor((p - min) / size) in float32 (subtraction, then true
// division, as the reference), kInvalid outside the half-open range. Returns whether any x, y or
// z is NaN or inf. RS > 0: compile-time row stride with contiguous columns (vectorizes).
template <class Key, int RS>
bool keys_block(const float* pts, int64_t rs, int64_t cs, int64_t len, const Grid& g, Key* out) {
  const float mnx = g.mn[0], mny = g.mn[1], mnz = g.mn[2], mxx = g.mx[0], mxy = g.mx[1], mxz = g.mx[2];
  const float szx = g.sz[0], szy = g.sz[1], szz = g.sz[2], nfx = g.nf[0], nfy = g.nf[1], nfz = g.nf[2];
  const Key nx = static_cast<Key>(g.nx), ny = static_cast<Key>(g.ny);
  const int64_t row = RS > 0 ? RS : rs, col = RS > 0 ? 1 : cs;
  int bad = 0;
  for (int64_t i = 0; i < len; ++i) {
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
bool keys_any(const float* pts, int64_t rs, int64_t cs, int64_t len, const Grid& g, Key* out) {
  if (cs == 1 && rs == 4) return keys_block<Key, 4>(pts, rs, cs, len, g, out);
  if (cs == 1 && rs == 3) return keys_block<Key, 3>(pts, rs, cs, len, g, out);
  return keys_block<Key, 0>(pts, rs, cs, len, g, out);
}

// Keys of frame points [lo, hi) into keys[0, hi - lo), and -1 as the voxel of every point
// outside the grid. Returns the number of valid points.
template <class E>
int64_t key_pass(const float* pts, int64_t rs, int64_t cs, int64_t lo, int64_t hi, const Grid& g,
                 typename E::Key* keys, int64_t* p2v, bool& bad) {
  using Key = typename E::Key;
  int64_t nv = 0;
  for (int64_t s = lo; s < hi; s += kKeyBlock) {
    const int64_t len = std::min(kKeyBlock, hi - s);
    Key* kb = keys + (s - lo);
    const float* ps = pts + s * rs;
    bad = keys_any<Key>(ps, rs, cs, len, g, kb) || bad;
    int64_t valid = 0;
    for (int64_t i = 0; i < len; ++i) valid += kb[i] != E::kInvalid;
    nv += valid;
    if (valid < len)
      for (int64_t i = 0; i < len; ++i)
        if (kb[i] == E::kInvalid) p2v[s + i] = -1;
  }
  return nv;
}

// A frame after its sort: sorted elements, and its voxels and kept points after the caps.
template <class E>
struct Frame {
  const typename E::Elem* s = nullptr;
  int64_t len = 0, voxels = 0, kept = 0;
};

// Voxels and kept points of the frame's first `max_runs` runs (all when max_runs < 0).
template <class E>
void count_runs(Frame<E>& fr, int64_t k, int64_t max_runs) {
  const auto* s = fr.s;
  const int64_t len = fr.len;
  int64_t r = 0, p = 0;
  if (max_runs < 0) {  // the whole frame, branch-free (runs are short and irregular)
    if (len > 0) {
      auto prev = E::key(s[0]);
      int64_t pos = 0;
      r = p = 1;
      for (int64_t i = 1; i < len; ++i) {
        const auto cur = E::key(s[i]);
        const int64_t same = cur == prev;
        prev = cur;
        r += 1 - same;
        pos = (pos + 1) & -same;  // position inside the run
        p += pos < k;
      }
      if (k < 0) p = len;
    }
  } else {
    for (int64_t i = 0; i < len && r < max_runs; ++r) {
      const auto key = E::key(s[i]);
      int64_t e = i + 1;
      while (e < len && E::key(s[e]) == key) ++e;
      p += k >= 0 ? std::min(e - i, k) : e - i;
      i = e;
    }
  }
  fr.voxels = r;
  fr.kept = p;
}

// Writes (frame, z, y, x) of linear cell index `lin`.
__attribute__((always_inline)) inline void write_coords(int32_t* co, int64_t f, uint64_t lin, const Grid& g) {
  co[0] = static_cast<int32_t>(f);
  if (g.cells <= 0xFFFFFFFFull) {
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

// The per-voxel reduction of the walks, folded in one kept row at a time in input order: step()
// takes the row, whether it is the voxel's first kept row and whether it is kept at all, and
// stores the running value into the voxel's output row; finish() turns a sum into a mean. The
// walk calls step() for every point (a dropped point leaves the value as it is), so it needs
// no branch per voxel. R: the reduce code. Sum and mean start from +0 and add (as the reference:
// -0.0 alone sums to +0.0); max starts from the first row and takes a later value only when it is
// strictly greater (the first maximum; a NaN is never taken after the first row).
struct NoFold {
  static constexpr bool kGather = false;
  static constexpr int kChannels = 0;
  NoFold(int64_t, int64_t) {}
  void step(const float*, bool, bool, float*) {}
  void finish(const float*, float*, int64_t) {}
};

// C channels (C > 0: compile-time, contiguous; C == 0: c channels of stride cs), the running
// value kept in the output row itself.
template <int R, int C>
struct Fold {
  static constexpr bool kGather = true;
  static constexpr int kChannels = C;
  int64_t c, cs;
  Fold(int64_t channels, int64_t col) : c(C > 0 ? C : channels), cs(C > 0 ? 1 : col) {}
  void step(const float* row, bool first, bool keep, float* out) const {
    const int64_t nc = C > 0 ? C : c;
    for (int64_t j = 0; j < nc; ++j) {
      const float x = row[j * cs], a = out[j];  // a is stale on a first row; it is not used then
      const float folded = R == 2 ? (x > a ? x : a) : a + x;
      const float init = R == 2 ? x : 0.0f + x;
      out[j] = keep ? (first ? init : folded) : a;
    }
  }
  // The voxel's value from its running value (src and dst may be the same row).
  void finish(const float* src, float* dst, int64_t n) const {
    const float cnt = static_cast<float>(n);
    const int64_t nc = C > 0 ? C : c;
    for (int64_t j = 0; j < nc; ++j) dst[j] = R == 1 ? src[j] / cnt : src[j];
  }
};

#if defined(__GNUC__)
// Four contiguous channels (x, y, z, intensity: the usual point) as one vector register, with
// the selects as bit masks. GCC/Clang vector extensions: SSE on x86-64, NEON on AArch64.
typedef float V4f __attribute__((vector_size(16)));
typedef int32_t V4i __attribute__((vector_size(16)));

inline V4f select4(V4i mask, V4f a, V4f b) {
  return reinterpret_cast<V4f>((reinterpret_cast<V4i>(a) & mask) | (reinterpret_cast<V4i>(b) & ~mask));
}

template <int R>
struct Fold<R, 4> {
  static constexpr bool kGather = true;
  static constexpr int kChannels = 4;
  V4f acc = {0.0f, 0.0f, 0.0f, 0.0f};
  Fold(int64_t, int64_t) {}
  void step(const float* row, bool first, bool keep, float* out) {
    V4f x;
    std::memcpy(&x, row, sizeof x);
    const V4f zero = {0.0f, 0.0f, 0.0f, 0.0f};
    const V4f folded = R == 2 ? select4(x > acc, x, acc) : acc + x;
    const V4f init = R == 2 ? x : zero + x;
    const int32_t f = -static_cast<int32_t>(first), k = -static_cast<int32_t>(keep);
    acc = select4(V4i{k, k, k, k}, select4(V4i{f, f, f, f}, init, folded), acc);
    std::memcpy(out, &acc, sizeof acc);
  }
  void finish(const float* src, float* dst, int64_t n) const {
    const float cnt = static_cast<float>(n);
    V4f a;
    std::memcpy(&a, src, sizeof a);
    if (R == 1) a = a / V4f{cnt, cnt, cnt, cnt};
    std::memcpy(dst, &a, sizeof a);
  }
};
#endif

struct WalkArgs {
  const float* pts;
  int64_t rs, cs, c;  // point row/column strides, channels
  int64_t f, frame_start, vbase, pbase;
};

// Scratch of the walks, kept per thread between calls.
struct WalkScratch {
  std::unique_ptr<int64_t[]> starts;
  size_t starts_cap = 0;
  std::unique_ptr<float[]> stage;  // running values of a late-allocated walk
  size_t stage_cap = 0;
  std::vector<std::pair<uint32_t, int64_t>> ranked;
};

// The voxel output tensors of m voxels: coords (m, 4) and counts (m,) int32, features (m, C)
// float32 when reducing (else empty).
struct VoxelTensors {
  at::Tensor coords, counts, feat;
  VoxelTensors() = default;
  VoxelTensors(const at::TensorOptions& opt, int64_t m, int64_t c, bool reduce)
      : coords(at::empty({m, 4}, opt.dtype(at::kInt))),
        counts(at::empty({m}, opt.dtype(at::kInt))),
        feat(reduce ? at::empty({m, c}, opt.dtype(at::kFloat)) : at::empty({0}, opt.dtype(at::kFloat))) {}
  // o with its voxel pointers into these tensors.
  Out into(Out o) const {
    o.coords = coords.data_ptr<int32_t>();
    o.counts = counts.data_ptr<int32_t>();
    o.feat = feat.data_ptr<float>();
    o.late = nullptr;
    return o;
  }
};

// The voxel outputs of a one-frame call, allocated by the walk once it knows their number.
struct LateVoxels {
  at::TensorOptions opt;
  int64_t c;
  bool reduce;
  VoxelTensors t;
  Out allocate(int64_t m, const Out& o) {
    t = VoxelTensors(opt, m, c, reduce);
    return t.into(o);
  }
};

// Walks a sorted frame keeping the first K points of each voxel (all without a cap) in its
// first fr.voxels voxels: writes coords, counts, point order, point -> voxel (-1 when dropped)
// and the reduced features; sets fr.voxels and fr.kept to what it wrote.
// Branch-free per point (runs are short, about 2 points at 0.1 m, and irregular): the run starts
// are recorded (slot cap + 1 absorbs the other writes) and the voxels written after. With
// o.late, the rows are folded in the thread's staging buffer and the voxel outputs allocated to
// their exact size once the main loop has counted them.
template <class E, class F, bool Capped>
void walk_first(Frame<E>& fr, const WalkArgs& w, const Grid& g, const Caps& caps, const Out& o, WalkScratch& ws) {
  // Everything in locals: the int64 outputs may alias the argument structs' fields, which would
  // otherwise be reloaded after every store.
  const auto* s = fr.s;
  const int64_t len = fr.len, cap = std::min(fr.voxels, len), vbase = w.vbase;
  const int64_t k = caps.k >= 0 ? caps.k : INT64_MAX;
  const float* pts = w.pts;
  const int64_t rs = w.rs, c = F::kChannels > 0 ? F::kChannels : w.c, f = w.f;
  float* const feat = !F::kGather ? nullptr
                     : o.late   ? scratch(ws.stage, ws.stage_cap, static_cast<size_t>(cap * c))
                                : o.feat + vbase * c;
  int64_t* const order = o.order + w.pbase;
  int64_t* const p2v = o.p2v;
  const Grid grid = g;
  int64_t* const st = scratch(ws.starts, ws.starts_cap, static_cast<size_t>(cap + 2));
  F fold(c, w.cs);
  int64_t r = -1, pos = 0, wr = 0, i = 0;
  auto prev = len ? ~E::key(s[0]) : 0;  // differs from the first key: it starts a run
  for (; i < len; ++i) {
    if (i + kGatherAhead < len) {
      const int64_t ahead = E::index(s[i + kGatherAhead]);
      __builtin_prefetch(p2v + ahead, 1);
      if (F::kGather) __builtin_prefetch(pts + ahead * rs);
    }
    const auto cur = E::key(s[i]);
    const int64_t pt = E::index(s[i]);
    const int64_t same = cur == prev;
    prev = cur;
    r += 1 - same;
    if constexpr (Capped) {
      if (r == cap) break;  // max_voxels reached
      pos = (pos + 1) & -same;  // position inside the run
      st[same ? cap + 1 : r] = i;
      const bool keep = pos < k;
      if (keep) order[wr++] = pt;
      p2v[pt] = keep ? vbase + r : -1;
      if (F::kGather) fold.step(pts + pt * rs, !same, keep, feat + r * c);
    } else {  // every point kept: fewer live values, no spills
      st[same ? cap + 1 : r] = i;
      order[i] = pt;
      p2v[pt] = vbase + r;
      if (F::kGather) fold.step(pts + pt * rs, !same, true, feat + r * c);
    }
  }
  if constexpr (!Capped) wr = len;
  const int64_t nvox = std::min(r + 1, cap);
  st[nvox] = i;
  for (; i < len; ++i) p2v[E::index(s[i])] = -1;
  fr.voxels = nvox;
  fr.kept = wr;
  const Out v = o.late ? o.late->allocate(nvox, o) : o;
  int32_t* const coords = v.coords + 4 * vbase;
  int32_t* const counts = v.counts + vbase;
  float* const out = F::kGather ? v.feat + vbase * c : nullptr;
  for (int64_t j = 0; j < nvox; ++j) {
    const int64_t n = std::min(st[j + 1] - st[j], k);
    write_coords(coords + 4 * j, f, E::key(s[st[j]]), grid);
    counts[j] = static_cast<int32_t>(n);
    if (F::kGather) fold.finish(feat + j * c, out + j * c, n);
  }
}

// Walks a sorted frame keeping, in each voxel over the cap, the K points with the lowest
// (seeded hash of the index within the frame, index) pairs, still in input order (same contract
// as walk_first).
template <class E, class F>
void walk_hashed(Frame<E>& fr, const WalkArgs& w, const Grid& g, const Caps& caps, const Out& o,
                 std::vector<std::pair<uint32_t, int64_t>>& ranked) {
  const auto* s = fr.s;
  const int64_t len = fr.len, cap = fr.voxels;
  F fold(w.c, w.cs);
  int64_t wr = w.pbase, i = 0, r = 0;
  for (; r < cap && i < len; ++r) {
    const auto key = E::key(s[i]);
    int64_t e = i + 1;
    while (e < len && E::key(s[e]) == key) ++e;
    const int64_t v = w.vbase + r, n = e - i, keep = std::min(n, caps.k);
    float* const out = F::kGather ? o.feat + v * w.c : nullptr;
    write_coords(o.coords + 4 * v, w.f, key, g);
    o.counts[v] = static_cast<int32_t>(keep);
    std::pair<uint32_t, int64_t> cut{~0u, INT64_MAX};
    if (n > keep) {
      ranked.clear();
      for (int64_t j = i; j < e; ++j) {
        const int64_t pt = E::index(s[j]);
        ranked.emplace_back(fmix32(static_cast<uint32_t>(pt - w.frame_start) ^ caps.salt), pt);
      }
      std::nth_element(ranked.begin(), ranked.begin() + (keep - 1), ranked.end());
      cut = ranked[keep - 1];
    }
    bool first = true;
    for (int64_t j = i; j < e; ++j) {
      const int64_t pt = E::index(s[j]);
      if (n <= keep || std::make_pair(fmix32(static_cast<uint32_t>(pt - w.frame_start) ^ caps.salt), pt) <= cut) {
        o.order[wr++] = pt;
        o.p2v[pt] = v;
        if (F::kGather) fold.step(w.pts + pt * w.rs, first, true, out);
        first = false;
      } else {
        o.p2v[pt] = -1;
      }
    }
    if (F::kGather) fold.finish(out, out, keep);
    i = e;
  }
  for (; i < len; ++i) o.p2v[E::index(s[i])] = -1;
  fr.voxels = r;
  fr.kept = wr - w.pbase;
}

template <class E, class F>
void walk_frame(Frame<E>& fr, const WalkArgs& w, const Grid& g, const Caps& caps, const Out& o,
                WalkScratch& ws) {
  if (caps.hashed && caps.k >= 0)
    walk_hashed<E, F>(fr, w, g, caps, o, ws.ranked);
  else if (caps.k >= 0 || caps.max_voxels >= 0)
    walk_first<E, F, true>(fr, w, g, caps, o, ws);
  else
    walk_first<E, F, false>(fr, w, g, caps, o, ws);
}

template <class E, int R>
void walk_frame_channels(Frame<E>& fr, const WalkArgs& w, const Grid& g, const Caps& caps, const Out& o,
                         WalkScratch& ws) {
  if (w.cs == 1 && w.c == 4) return walk_frame<E, Fold<R, 4>>(fr, w, g, caps, o, ws);
  if (w.cs == 1 && w.c == 3) return walk_frame<E, Fold<R, 3>>(fr, w, g, caps, o, ws);
  walk_frame<E, Fold<R, 0>>(fr, w, g, caps, o, ws);
}

template <class E>
void walk_frame_reduce(Frame<E>& fr, const WalkArgs& w, const Grid& g, const Caps& caps, const Out& o,
                       int64_t reduce, WalkScratch& ws) {
  switch (reduce) {
    case 0:
      return walk_frame_channels<E, 0>(fr, w, g, caps, o, ws);
    case 1:
      return walk_frame_channels<E, 1>(fr, w, g, caps, o, ws);
    case 2:
      return walk_frame_channels<E, 2>(fr, w, g, caps, o, ws);
    default:
      return walk_frame<E, NoFold>(fr, w, g, caps, o, ws);
  }
}

// The first `rows` rows of t: in place when they fill most of it, else copied to a tensor of
// their own size.
inline at::Tensor trimmed(at::Tensor t, int64_t rows) {
  if (rows * 5 >= t.size(0) * 4) {
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    shape[0] = rows;
    return t.resize_(shape);
  }
  return t.narrow(0, 0, rows).clone();
}

using IndexOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Per-thread buffers of sort_frame, sized to one frame and reused frame after frame and call
// after call.
template <class E>
struct SortScratch {
  std::vector<uint32_t> hist, half;
  std::vector<uint32_t> copies;  // zero between uses (count_digits leaves it so)
  std::unique_ptr<typename E::Elem[]> tmp;
  std::unique_ptr<typename E::Key[]> keys;
  size_t tmp_cap = 0, keys_cap = 0;
};

// Keys, digit counts and sort of frame [lo, hi) (its elements land in out, which holds hi - lo);
// sets p2v to -1 for its points outside the grid and `bad` when a coordinate is not finite.
template <class E>
Frame<E> sort_frame(const float* pts, int64_t rs, int64_t cs, int64_t lo, int64_t hi, const Grid& g, int bits,
                    int64_t* p2v, bool& bad, typename E::Elem* out, SortScratch<E>& ss) {
  using Elem = typename E::Elem;
  const int64_t len = hi - lo;
  const Digits dg(bits, len);
  ss.hist.resize(static_cast<size_t>(dg.passes) * dg.buckets);
  ss.half.resize(dg.buckets);
  ss.copies.resize(4 * static_cast<size_t>(dg.buckets));
  Elem* const tmp = scratch(ss.tmp, ss.tmp_cap, len);
  typename E::Key* const keys = scratch(ss.keys, ss.keys_cap, len);
  Frame<E> fr;
  fr.len = key_pass<E>(pts, rs, cs, lo, hi, g, keys, p2v, bad);
  const bool halves = count_digits(keys, len, len - fr.len, dg, ss.copies.data(), ss.hist.data(), ss.half.data());
  // The scatters alternate between the two buffers: the last one lands in out unless a pass was
  // skipped (all keys sharing its digit), which costs a copy.
  const bool odd = dg.passes % 2 == 1;
  const Elem* sorted = sort_keys<E>(keys, len, fr.len, lo, dg, ss.hist.data(), halves ? ss.half.data() : nullptr,
                                    odd ? out : tmp, odd ? tmp : out);
  if (sorted != out) std::copy(sorted, sorted + fr.len, out);
  fr.s = out;
  return fr;
}

// coords, counts, point_to_voxel, voxel_offsets, point_order and features ((M, C) float32 when
// reduce >= 0, else empty) of a float32 batch; offsets off[0..nframes] already checked.
//
// One thread (one frame, a batch under kParallelMin points, or a batch on one thread): frames in
// order, each sorted and walked while its points and elements are still in cache. The outputs
// get their exact sizes (a tensor that keeps a larger storage costs memory wherever it is shared
// or pickled): one frame's walk allocates its voxel outputs once it has counted them; a batch is
// walked into per-thread staging sized by upper bounds (a voxel holds at least one point;
// max_voxels per frame) at the running voxel and point counts, then copied. The point order is
// sized by the points and trimmed in place (copied only when far smaller).
// Several threads: frames in parallel in two loops, sort + count the runs, then walk into the
// exact slices the counts give. Errors (a failed allocation) are carried out of the parallel
// region and rethrown.
template <class E>
IndexOutputs voxel_index_impl(const at::Tensor& points, const int64_t* off, int64_t nframes, const Grid& g,
                              const Caps& caps, int64_t reduce) {
  using Elem = typename E::Elem;
  const int64_t n = points.size(0), c = points.size(1);
  const float* pts = points.data_ptr<float>();
  const int64_t rs = points.stride(0), cs = points.stride(1);
  int64_t max_len = 0;
  for (int64_t f = 0; f < nframes; ++f) max_len = std::max(max_len, off[f + 1] - off[f]);
  const int bits = bit_width(g.cells - 1);
  const int nt = n >= kParallelMin && nframes >= 2 ? std::max(1, at::get_num_threads()) : 1;
  const auto lopt = points.options().dtype(at::kLong);
  at::Tensor p2v = at::empty({n}, lopt);
  int64_t* const p2v_ptr = p2v.data_ptr<int64_t>();
  std::vector<int64_t> vbase(nframes + 1, 0), pbase(nframes + 1, 0);
  const char* const non_finite = "voxel_index: non-finite point coordinates (NaN or inf in x, y or z)";
  VoxelTensors vt;
  at::Tensor order;
  if (nt == 1) {
    thread_local SortScratch<E> ss;
    thread_local WalkScratch ws;
    thread_local std::unique_ptr<Elem[]> res_buf;
    thread_local size_t res_cap = 0;
    Elem* const res = scratch(res_buf, res_cap, max_len);
    // One frame, first K: the walk allocates the voxel outputs once it has counted them.
    // Otherwise: upper bounds (a voxel holds at least one point; max_voxels per frame).
    const bool late = nframes == 1 && !(caps.hashed && caps.k >= 0);
    int64_t vbound = 0;
    for (int64_t f = 0; f < nframes && !late; ++f)
      vbound += caps.max_voxels >= 0 ? std::min(caps.max_voxels, off[f + 1] - off[f]) : off[f + 1] - off[f];
    // Several frames: the voxel outputs are staged in the thread's buffers (reused across calls,
    // so warm) and copied to tensors of their exact size at the end.
    thread_local std::unique_ptr<int32_t[]> stage_coords, stage_counts;
    thread_local std::unique_ptr<float[]> stage_feat;
    thread_local size_t coords_cap = 0, counts_cap = 0, feat_cap = 0;
    order = at::empty({n}, lopt);
    Out o{nullptr, nullptr, p2v_ptr, order.data_ptr<int64_t>(), nullptr};
    if (!late) {
      o.coords = scratch(stage_coords, coords_cap, static_cast<size_t>(4 * vbound));
      o.counts = scratch(stage_counts, counts_cap, static_cast<size_t>(vbound));
      if (reduce >= 0) o.feat = scratch(stage_feat, feat_cap, static_cast<size_t>(vbound * c));
    }
    LateVoxels lv{points.options(), c, reduce >= 0, {}};
    if (late) o.late = &lv;
    for (int64_t f = 0; f < nframes; ++f) {
      bool bad = false;
      Frame<E> fr = sort_frame<E>(pts, rs, cs, off[f], off[f + 1], g, bits, p2v_ptr, bad, res, ss);
      TORCH_CHECK(!bad, non_finite);
      fr.voxels = caps.max_voxels >= 0 ? std::min(caps.max_voxels, fr.len) : fr.len;  // a cap for the walk
      const WalkArgs w{pts, rs, cs, c, f, off[f], vbase[f], pbase[f]};
      walk_frame_reduce<E>(fr, w, g, caps, o, reduce, ws);
      vbase[f + 1] = vbase[f] + fr.voxels;
      pbase[f + 1] = pbase[f] + fr.kept;
    }
    const int64_t m = vbase[nframes];
    if (late) {
      vt = lv.t;
    } else {
      vt = VoxelTensors(points.options(), m, c, reduce >= 0);
      std::copy(o.coords, o.coords + 4 * m, vt.coords.data_ptr<int32_t>());
      std::copy(o.counts, o.counts + m, vt.counts.data_ptr<int32_t>());
      if (reduce >= 0) std::copy(o.feat, o.feat + m * c, vt.feat.data_ptr<float>());
    }
    order = trimmed(order, pbase[nframes]);
  } else {
    // The sorted frames, kept from the first loop for the second.
    thread_local std::unique_ptr<Elem[]> res_buf;
    thread_local size_t res_cap = 0;
    Elem* const res = scratch(res_buf, res_cap, n);
    std::vector<Frame<E>> frames(nframes);
    bool bad = false;
    std::exception_ptr error;  // an exception may not leave an OpenMP region
#pragma omp parallel num_threads(nt) reduction(|| : bad)
    {
      thread_local SortScratch<E> ss;
#pragma omp for schedule(dynamic, 1)
      for (int64_t f = 0; f < nframes; ++f) {
        try {
          Frame<E>& fr = frames[f];
          fr = sort_frame<E>(pts, rs, cs, off[f], off[f + 1], g, bits, p2v_ptr, bad, res + off[f], ss);
          count_runs(fr, caps.k, -1);
          if (caps.max_voxels >= 0 && fr.voxels > caps.max_voxels) count_runs(fr, caps.k, caps.max_voxels);
        } catch (...) {
#pragma omp critical(drivetl_voxel_index_error)
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    TORCH_CHECK(!bad, non_finite);
    for (int64_t f = 0; f < nframes; ++f) {
      vbase[f + 1] = vbase[f] + frames[f].voxels;
      pbase[f + 1] = pbase[f] + frames[f].kept;
    }
    vt = VoxelTensors(points.options(), vbase[nframes], c, reduce >= 0);
    order = at::empty({pbase[nframes]}, lopt);
    const Out o = vt.into(Out{nullptr, nullptr, p2v_ptr, order.data_ptr<int64_t>(), nullptr});
#pragma omp parallel num_threads(nt)
    {
      thread_local WalkScratch ws;
#pragma omp for schedule(dynamic, 1)
      for (int64_t f = 0; f < nframes; ++f) {
        try {
          const WalkArgs w{pts, rs, cs, c, f, off[f], vbase[f], pbase[f]};
          walk_frame_reduce<E>(frames[f], w, g, caps, o, reduce, ws);
        } catch (...) {  // the walk's scratch may fail to grow
#pragma omp critical(drivetl_voxel_index_error)
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
  }
  at::Tensor voff = at::empty({nframes + 1}, lopt);
  std::copy(vbase.begin(), vbase.end(), voff.data_ptr<int64_t>());
  return {vt.coords, vt.counts, p2v, voff, order, vt.feat};
}

}  // namespace drivetl_ops
