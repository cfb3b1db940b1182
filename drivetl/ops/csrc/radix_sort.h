// Stable LSD radix sort of (voxel key, point index) elements, for the CPU kernel. Plain C++ (no
// torch headers), one thread per call: the kernel gives each thread its own frame, or its own key
// range of a frame.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace drivetl_ops {

// (lin << 32) | point index: one 8-byte word per point when both fit 32 bits (the usual case).
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

// Digit layout for `bits` key bits: the fewest passes of at most 11 bits, spread evenly.
struct Digits {
  int passes = 0, radix = 0, buckets = 1;
  explicit Digits(int bits) {
    if (bits <= 0) return;
    passes = (bits + 10) / 11;
    radix = (bits + passes - 1) / passes;
    buckets = 1 << radix;
  }
};

constexpr int kScatterBlock = 256;

// Histogram of digit (key >> shift) & mask over src[0, n), into h[0, buckets). Four interleaved
// copies keep runs of equal digits (neighbouring points share cells) from serializing the updates.
template <class E>
void count_digits(const typename E::Elem* src, int64_t n, int shift, uint32_t mask, int buckets, uint32_t* h) {
  std::vector<uint32_t> c(4 * static_cast<size_t>(buckets), 0);
  uint32_t* c0 = c.data();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) ++c0[j * buckets + ((E::key(src[i + j]) >> shift) & mask)];
  for (; i < n; ++i) ++c0[(E::key(src[i]) >> shift) & mask];
  for (int d = 0; d < buckets; ++d) h[d] = c0[d] + c0[buckets + d] + c0[2 * buckets + d] + c0[3 * buckets + d];
}

// Stable scatter of src[0, n) by digit into dst at the running offsets h. Positions of a block are
// computed first and stored after: interleaving the counter loads with the scattered stores makes
// the CPU wait on store-address disambiguation, which costs about 2.5x here.
template <class E>
void scatter_digits(const typename E::Elem* src, int64_t n, int shift, uint32_t mask, uint32_t* h,
                    typename E::Elem* dst) {
  uint32_t pos[kScatterBlock];
  for (int64_t s = 0; s < n; s += kScatterBlock) {
    const int64_t len = std::min<int64_t>(kScatterBlock, n - s);
    for (int64_t i = 0; i < len; ++i) pos[i] = h[(E::key(src[s + i]) >> shift) & mask]++;
    for (int64_t i = 0; i < len; ++i) dst[pos[i]] = src[s + i];
  }
}

// Sorts a[0, n) by key bits [0, bits), stably, one thread; b[0, n) is scratch. Returns the buffer
// that holds the result. A pass whose digit is the same for every key is skipped.
template <class E>
typename E::Elem* lsd_sort(typename E::Elem* a, typename E::Elem* b, int64_t n, int bits) {
  const Digits dg(bits);
  const uint32_t mask = static_cast<uint32_t>(dg.buckets - 1);
  std::vector<uint32_t> h(dg.buckets);
  for (int d = 0; d < dg.passes && n > 1; ++d) {
    const int shift = d * dg.radix;
    count_digits<E>(a, n, shift, mask, dg.buckets, h.data());
    uint32_t sum = 0;
    bool trivial = false;
    for (int v = 0; v < dg.buckets; ++v) {
      trivial = trivial || h[v] == n;
      const uint32_t c = h[v];
      h[v] = sum;
      sum += c;
    }
    if (trivial) continue;
    scatter_digits<E>(a, n, shift, mask, h.data(), b);
    std::swap(a, b);
  }
  return a;
}

}  // namespace drivetl_ops
