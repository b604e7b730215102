// The counter-based hash behind dropout masks and mini-batch keys, written
// once for the host and the device so both draw the same masks.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ADASYNC_HD __host__ __device__ __forceinline__
#else
#define ADASYNC_HD inline
#endif

namespace adasync {

// splitmix64's finaliser: a bijection that scatters every input bit.
ADASYNC_HD uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Element i of the mask with key k is dropped when this is below p: 24 bits,
// so the float is exact and the comparison the same everywhere.
ADASYNC_HD float dropout_uniform(uint64_t key, uint64_t i) {
  return float(mix64(key ^ mix64(i)) >> 40) * (1.0f / 16777216.0f);
}

ADASYNC_HD uint64_t batch_key_step(uint64_t h, int32_t idx) { return mix64(h ^ uint64_t(uint32_t(idx))); }

}  // namespace adasync
