// Stable LSD radix sort of (voxel key, point index) elements, for the CPU kernel. Plain C++ (no
// torch headers), one thread per call: the kernel gives each thread whole frames.
//
// The sort starts from the frame's key array (one key per point, E::kInvalid for a point outside
// the grid) and digit histograms that the key pass already counted, so the elements are built by
// the first scatter itself: no separate compaction or counting reads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

namespace drivetl_ops {

// (lin << 32) | point index: one 8-byte word per point when both fit 32 bits (the usual case).
// Packed words compare like (key, index) pairs.
struct PackedElem {
  using Elem = uint64_t;
  using Key = uint32_t;
  static constexpr Key kInvalid = ~Key(0);
  static Elem make(Key k, int64_t i) { return (uint64_t(k) << 32) | uint64_t(i); }
  static Key key(Elem e) { return Key(e >> 32); }
  static int64_t index(Elem e) { return int64_t(e & 0xFFFFFFFFull); }
};

// Grids with more than 2^32 - 1 cells (or batches of 2^32 points): 16-byte elements.
struct WideElem {
  struct Elem {
    uint64_t k;
    int64_t i;
  };
  using Key = uint64_t;
  static constexpr Key kInvalid = ~Key(0);
  static Elem make(Key k, int64_t i) { return Elem{k, i}; }
  static Key key(const Elem& e) { return e.k; }
  static int64_t index(const Elem& e) { return e.i; }
};

// Digit layout for `bits` key bits and n keys: the fewest passes of at most 14 bits, spread
// evenly. Wide digits mean fewer passes over the elements (measured on 180k points: 2 passes of
// 14 bits beat 3 of 9 by about 20%), but their histograms cost per pass whatever n is, so small
// frames get narrower digits (down to 6 bits). A one-cell grid has 0 bits and still makes one
// (trivial) pass, which builds the elements.
struct Digits {
  static constexpr int kMaxPasses = 12;  // 64-bit keys in 6-bit digits
  int passes = 1, radix = 0, buckets = 1;
  uint32_t mask = 0;
  Digits(int bits, int64_t n) {
    if (bits <= 0) return;
    int width = 0;
    for (uint64_t v = static_cast<uint64_t>(n); v; v >>= 1) ++width;
    const int max_radix = std::min(14, std::max(6, width - 4));
    passes = (bits + max_radix - 1) / max_radix;
    radix = (bits + passes - 1) / passes;
    buckets = 1 << radix;
    mask = static_cast<uint32_t>(buckets - 1);
  }
};

// Digit counts of the n keys (n_invalid of them kInvalid, which are left out) for every pass, into
// h[pass * buckets + digit]; `copies` holds 4 * buckets counters, zero on entry and left zero
// (so the caller zeroes them once, not per pass). One read of the keys per pass (one for both
// digits of a two-pass sort); interleaved copies of the counters keep runs of equal digits
// (neighbouring points share cells) from serializing the increments. For a two-pass sort the
// first-digit counts of the first half of the keys go to first_half too (returns true): the
// sort's first scatter then runs the two halves as independent counter chains.
template <class Key>
bool count_digits(const Key* keys, int64_t n, int64_t n_invalid, const Digits& dg, uint32_t* copies, uint32_t* h,
                  uint32_t* first_half) {
  const int buckets = dg.buckets, radix = dg.radix;
  const uint32_t mask = dg.mask;
  if (dg.passes == 2) {  // both digits in one read; copies per half of the keys (see sort_keys)
    uint32_t *a0 = copies, *a1 = a0 + buckets, *b0 = a1 + buckets, *b1 = b0 + buckets;
    const int64_t m = n / 2;
    int64_t invalid_first = 0;
    for (int64_t i = 0; i < m; ++i) {
      const Key k0 = keys[i], k1 = keys[i + m];
      invalid_first += k0 == static_cast<Key>(~Key(0));
      ++a0[static_cast<uint32_t>(k0) & mask];
      ++b0[static_cast<uint32_t>(k0 >> radix) & mask];
      ++a1[static_cast<uint32_t>(k1) & mask];
      ++b1[static_cast<uint32_t>(k1 >> radix) & mask];
    }
    for (int64_t i = 2 * m; i < n; ++i) {
      ++a1[static_cast<uint32_t>(keys[i]) & mask];
      ++b1[static_cast<uint32_t>(keys[i] >> radix) & mask];
    }
    for (int v = 0; v < buckets; ++v) {
      first_half[v] = a0[v];
      h[v] = a0[v] + a1[v];
      h[buckets + v] = b0[v] + b1[v];
      a0[v] = a1[v] = b0[v] = b1[v] = 0;
    }
    first_half[mask] -= static_cast<uint32_t>(invalid_first);  // an invalid key has every digit == mask
    h[mask] -= static_cast<uint32_t>(n_invalid);
    h[buckets + mask] -= static_cast<uint32_t>(n_invalid);
    return true;
  }
  for (int d = 0; d < dg.passes; ++d) {
    const int shift = d * radix;
    uint32_t *c0 = copies, *c1 = c0 + buckets, *c2 = c1 + buckets, *c3 = c2 + buckets;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      ++c0[static_cast<uint32_t>(keys[i] >> shift) & mask];
      ++c1[static_cast<uint32_t>(keys[i + 1] >> shift) & mask];
      ++c2[static_cast<uint32_t>(keys[i + 2] >> shift) & mask];
      ++c3[static_cast<uint32_t>(keys[i + 3] >> shift) & mask];
    }
    for (; i < n; ++i) ++c0[static_cast<uint32_t>(keys[i] >> shift) & mask];
    uint32_t* hd = h + d * buckets;
    for (int v = 0; v < buckets; ++v) {
      hd[v] = c0[v] + c1[v] + c2[v] + c3[v];
      c0[v] = c1[v] = c2[v] = c3[v] = 0;
    }
    hd[mask] -= static_cast<uint32_t>(n_invalid);  // an invalid key has every digit == mask
  }
  return false;
}

constexpr int kScatterBlock = 256;

// Sorts the valid points of keys[0, n) (nv of them; h: their digit counts, pass-major) by
// key, stably: element j of the result is E::make(key, base + input position). a and b hold nv
// elements each; returns the one that holds the result. h (and first_half: the first digit's
// counts over keys[0, n / 2), or null) are consumed (turned into offsets).
//
// Each scatter computes a block's positions first and stores after: interleaving the counter
// loads with the scattered stores makes the CPU wait on store-address disambiguation, which
// costs about 2.5x here. A later pass whose digit is the same for every key is skipped.
template <class E>
typename E::Elem* sort_keys(const typename E::Key* keys, int64_t n, int64_t nv, int64_t base, const Digits& dg,
                            uint32_t* h, uint32_t* first_half, typename E::Elem* a, typename E::Elem* b) {
  using Elem = typename E::Elem;
  using Key = typename E::Key;
  // Locals, not dg's fields: the counters are uint32_t, which may alias them (reloads per store).
  const int passes = dg.passes, radix = dg.radix, buckets = dg.buckets;
  const uint32_t mask = dg.mask;
  bool trivial[Digits::kMaxPasses] = {};
  for (int d = 0; d < passes; ++d) {
    uint32_t* hd = h + d * buckets;
    uint32_t sum = 0;
    for (int v = 0; v < buckets; ++v) {
      trivial[d] = trivial[d] || hd[v] == static_cast<uint32_t>(nv);
      const uint32_t c = hd[v];
      hd[v] = sum;
      sum += c;
    }
  }
  // Pass 0 builds the elements of the valid points (an invalid key adds 0 to its counter). With
  // the first half's counts, the halves [0, m) and [m, n) are scattered side by side from their
  // own offsets (the second half's start after the first half's in every bucket: still stable),
  // so a run of equal digits in one half does not wait on its own counter every element.
  uint32_t pos[kScatterBlock];
  Elem el[kScatterBlock];
  if (first_half != nullptr) {
    uint32_t* h2 = first_half;
    for (int v = 0; v < buckets; ++v) h2[v] += h[v];
    const int64_t m = n / 2;
    uint32_t pos2[kScatterBlock];
    Elem el2[kScatterBlock];
    for (int64_t s = 0; s < m; s += kScatterBlock) {
      const int64_t len = std::min<int64_t>(kScatterBlock, m - s);
      int w = 0, w2 = 0;
      for (int64_t i = s; i < s + len; ++i) {
        const Key k = keys[i], k2 = keys[i + m];
        const uint32_t ok = k != E::kInvalid, ok2 = k2 != E::kInvalid;
        uint32_t& slot = h[static_cast<uint32_t>(k) & mask];
        uint32_t& slot2 = h2[static_cast<uint32_t>(k2) & mask];
        el[w] = E::make(k, base + i);
        pos[w] = slot;
        el2[w2] = E::make(k2, base + i + m);
        pos2[w2] = slot2;
        slot += ok;
        slot2 += ok2;
        w += static_cast<int>(ok);
        w2 += static_cast<int>(ok2);
      }
      for (int j = 0; j < w; ++j) a[pos[j]] = el[j];
      for (int j = 0; j < w2; ++j) a[pos2[j]] = el2[j];
    }
    for (int64_t i = 2 * m; i < n; ++i) {
      const Key k = keys[i];
      if (k != E::kInvalid) a[h2[static_cast<uint32_t>(k) & mask]++] = E::make(k, base + i);
    }
  } else {
    for (int64_t s = 0; s < n; s += kScatterBlock) {
      const int64_t len = std::min<int64_t>(kScatterBlock, n - s);
      int w = 0;
      for (int64_t i = s; i < s + len; ++i) {
        const Key k = keys[i];
        const uint32_t ok = k != E::kInvalid;
        uint32_t& slot = h[static_cast<uint32_t>(k) & mask];
        el[w] = E::make(k, base + i);
        pos[w] = slot;
        slot += ok;
        w += static_cast<int>(ok);
      }
      for (int j = 0; j < w; ++j) a[pos[j]] = el[j];
    }
  }
  for (int d = 1; d < passes; ++d) {
    if (trivial[d]) continue;
    uint32_t* hd = h + d * buckets;
    const int shift = d * radix;
    for (int64_t s = 0; s < nv; s += kScatterBlock) {
      const int64_t len = std::min<int64_t>(kScatterBlock, nv - s);
      for (int64_t i = 0; i < len; ++i) pos[i] = hd[static_cast<uint32_t>(E::key(a[s + i]) >> shift) & mask]++;
      for (int64_t i = 0; i < len; ++i) b[pos[i]] = a[s + i];
    }
    std::swap(a, b);
  }
  return a;
}

}  // namespace drivetl_ops
