// Sampler: the mini-batches one worker draws from a dataset.
//
// Batch b of a sampler is a pure function of (dataset size, batch size, seed,
// shard, shards, b): batches run through epochs, each epoch a fresh
// permutation of the worker's indices drawn from Rng(seed, epoch-stream).
// Random access (at) is what lets a trace be replayed and a checkpoint store a
// single counter (position) per worker.
//
// Sharded (shards > 1): the worker owns the indices i with i % shards == shard
// and permutes only those. Unsharded: it permutes the whole set, and workers
// differ through their seeds. An epoch has floor(indices / batch) batches; the
// remainder of each permutation is skipped (drop-last), so every batch is full.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace adasync {

class Sampler {
 public:
  Sampler(size_t dataset_size, int batch, uint64_t seed, int shard = 0, int shards = 1, bool shuffle = true);

  int batch_size() const { return batch_; }
  uint64_t batches_per_epoch() const { return batches_per_epoch_; }
  size_t indices_per_epoch() const { return owned_.size(); }

  // Indices of batch number `b` (any b, in any order).
  void at(uint64_t b, std::vector<int32_t>* out);
  // Indices of batch number position(), then advances position.
  uint64_t next(std::vector<int32_t>* out);

  // The epoch batch number `b` falls in (data augmentation draws from it).
  uint64_t epoch_of(uint64_t b) const { return batches_per_epoch_ > 0 ? b / batches_per_epoch_ : 0; }

  uint64_t position() const { return position_; }
  void set_position(uint64_t p) { position_ = p; }

 private:
  void load_epoch(uint64_t epoch);

  int batch_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<int32_t> owned_;  // this worker's indices, in dataset order
  std::vector<int32_t> perm_;   // current epoch's permutation of owned_
  uint64_t epoch_loaded_ = UINT64_MAX;
  uint64_t batches_per_epoch_ = 0;
  uint64_t position_ = 0;
};

}  // namespace adasync
