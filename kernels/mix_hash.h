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

// Sample `sample`'s augmentation in `epoch`: shifts in [-pad, pad] and a flip bit.
struct AugmentDraw {
  int dy, dx;
  bool flip;
};
ADASYNC_HD AugmentDraw augment_draw(uint64_t seed, uint64_t epoch, int32_t sample, int pad) {
  const uint64_t h = mix64(mix64(mix64(seed) ^ epoch) ^ uint64_t(uint32_t(sample)));
  const uint64_t span = uint64_t(2 * pad + 1);
  return AugmentDraw{int(h % span) - pad, int((h >> 16) % span) - pad, ((h >> 32) & 1) != 0};
}

// Output pixel (i, j) of an augmented h x w image reads input (i + dy, sj)
// with sj = (flip ? w - 1 - j : j) + dx; outside the image it is the fill.
ADASYNC_HD bool augment_source(const AugmentDraw& d, int i, int j, int h, int w, int* si, int* sj) {
  *si = i + d.dy;
  *sj = (d.flip ? w - 1 - j : j) + d.dx;
  return *si >= 0 && *si < h && *sj >= 0 && *sj < w;
}

}  // namespace adasync
