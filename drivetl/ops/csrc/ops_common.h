// Small helpers the CPU and CUDA kernels share, so that both compute the same thing: the seeded
// hash of keep="hashed" (both backends must keep the same points) and a bit count. Plain C++ with
// no torch headers, usable by nvcc (the hash on host and device) and by the C++ compiler.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DRIVETL_HOST_DEVICE __host__ __device__
#else
#define DRIVETL_HOST_DEVICE
#endif

namespace drivetl_common {

// MurmurHash3's 32-bit finalizer: a bijection that mixes every input bit into every output bit.
DRIVETL_HOST_DEVICE inline uint32_t fmix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

// keep="hashed" ranks a voxel's points by fmix32(index within the frame ^ keep_salt(seed)).
inline uint32_t keep_salt(int64_t seed) {
  return fmix32(static_cast<uint32_t>((static_cast<uint64_t>(seed) + 0x9E3779B9ull) & 0xFFFFFFFFull));
}

// Number of bits needed to write x (0 for 0).
inline int bit_width(uint64_t x) {
  int b = 0;
  for (; x; x >>= 1) ++b;
  return b;
}

}  // namespace drivetl_common
