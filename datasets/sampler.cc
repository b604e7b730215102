#include "datasets/sampler.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "datasets/rng.h"

namespace adasync {
namespace {

// Epoch e draws from stream kEpochStream + e: a tag far from the small stream numbers
// other modules give workers, so a sampler never replays another generator's numbers.
constexpr uint64_t kEpochStream = 0x73616d706c000000ULL;  // "sampl"

}  // namespace

Sampler::Sampler(size_t dataset_size, int batch, uint64_t seed, int shard, int shards, bool shuffle)
    : batch_(batch), seed_(seed), shuffle_(shuffle) {
  if (batch < 1) {
    throw std::invalid_argument("Sampler: batch size must be >= 1, got " + std::to_string(batch));
  }
  if (shards < 1) throw std::invalid_argument("Sampler: shards must be >= 1, got " + std::to_string(shards));
  if (shard < 0 || shard >= shards) {
    throw std::invalid_argument("Sampler: shard must be in [0, " + std::to_string(shards) + "), got " +
                                std::to_string(shard));
  }
  if (dataset_size > size_t(INT32_MAX)) {
    throw std::invalid_argument("Sampler: dataset size " + std::to_string(dataset_size) +
                                " exceeds the int32 index range");
  }
  for (size_t i = size_t(shard); i < dataset_size; i += size_t(shards)) owned_.push_back(int32_t(i));
  if (size_t(batch) > owned_.size()) {
    throw std::invalid_argument("Sampler: batch size " + std::to_string(batch) + " exceeds the " +
                                std::to_string(owned_.size()) + " indices owned by shard " +
                                std::to_string(shard) + " of " + std::to_string(shards) + " (dataset size " +
                                std::to_string(dataset_size) + ")");
  }
  batches_per_epoch_ = owned_.size() / size_t(batch);
  // The shard is folded into the seed so shards sharing a seed still shuffle differently.
  if (shard != 0) {
    uint64_t x = uint64_t(shard);
    seed_ ^= splitmix64(x);
  }
}

void Sampler::load_epoch(uint64_t epoch) {
  if (epoch == epoch_loaded_ && !perm_.empty()) return;
  perm_ = owned_;
  if (shuffle_) {
    Rng rng(seed_, kEpochStream + epoch);
    for (size_t i = perm_.size() - 1; i > 0; --i) std::swap(perm_[i], perm_[rng.below(i + 1)]);
  }
  epoch_loaded_ = epoch;
}

void Sampler::at(uint64_t b, std::vector<int32_t>* out) {
  const uint64_t epoch = b / batches_per_epoch_;
  const size_t offset = size_t(b % batches_per_epoch_) * size_t(batch_);
  load_epoch(epoch);
  out->assign(perm_.begin() + offset, perm_.begin() + offset + batch_);
}

uint64_t Sampler::next(std::vector<int32_t>* out) {
  const uint64_t b = position_;
  at(b, out);
  ++position_;
  return b;
}

}  // namespace adasync
