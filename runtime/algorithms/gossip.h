// SwarmSGD's communication: gossip graphs, the lattice quantizer, and the
// block codec with its check and full-precision fallback (ALGORITHMS.md
// section 7; see swarm.h for the protocol).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/settings.h"

namespace adasync {

// ------------------------------------------------------------------ graphs
// Undirected communication graph on P nodes; neighbours(i) sorted.
class GossipGraph {
 public:
  // kind: complete | ring | torus (2-D, rows x cols = P, as square as P
  // allows, both >= 2) | regular (random r-regular, from the seed).
  static GossipGraph make(GraphKind kind, int nodes, int degree, uint64_t seed);
  int nodes() const { return int(adj_.size()); }
  const std::vector<int>& neighbours(int i) const { return adj_[size_t(i)]; }
  std::string describe() const { return desc_; }
  bool connected() const;

 private:
  std::vector<std::vector<int>> adj_;
  std::string desc_;
};

// ------------------------------------------------------------------ quantizer
// The element-wise lattice quantizer with one step e.
class LatticeQuantizer {
 public:
  // bits: 0 (full precision, no quantisation), 8 or 16; step: e.
  LatticeQuantizer(int bits, double step);
  int bits() const { return bits_; }
  double step() const { return e_; }
  // Bytes of one encoded message of n coordinates.
  size_t message_bytes(size_t n) const;
  // Encodes x into msg (message_bytes(n) bytes).
  void encode(const float* x, size_t n, unsigned char* msg) const;
  // Decodes msg relative to the receiver's model b into out.
  void decode(const unsigned char* msg, const float* b, size_t n, float* out) const;
  // |x - b| bound within which decoding is exact to e/2.
  double safe_radius() const;

 private:
  int bits_;
  double e_;
  uint32_t q_;
};

// Number of coordinates whose decoded value misses the sent one by more than
// e/2 (the safe range was left): what the engine reports.
size_t count_out_of_range(const float* sent, const float* decoded, size_t n, double step);

// ------------------------------------------------------------------ messages
// One direction of an exchange, in blocks of `block` coordinates (our rule).
// A quantised message holds, per block: the step e (float, 4 bytes), a 32-bit
// check of the lattice indices round(x / e), and the codes (bits / 8 bytes
// each). The receiver decodes each block relative to its own model and
// recomputes the check; a block whose check differs (some |x - b| left the
// safe range) is named in a NACK (one bit per block) and sent again at full
// precision. Adaptive step (fixed_step 0): e = 2 bound / (q - 4) for the
// sender's bound on max |x - b| in the block, so a true bound never leaves the
// safe range, floored at max|x| 2^-23 (indices stay below 2^23 and float
// rounding stays far inside the range). e = 0 in a header means "cannot be
// quantised" (a non-finite value): the block goes at full precision.
// bits 0: the message is the n floats.
class SwarmCodec {
 public:
  SwarmCodec(int bits, double fixed_step, size_t block);
  int bits() const { return bits_; }
  // Full precision: Q is the identity, the message is the floats, nothing can fail to decode.
  bool exact() const { return bits_ == 0; }
  bool adaptive() const { return bits_ != 0 && fixed_ == 0; }
  double fixed_step() const { return fixed_; }
  size_t block() const { return block_; }
  size_t blocks(size_t n) const { return bits_ == 0 ? 0 : (n + block_ - 1) / block_; }
  static constexpr size_t kHeaderBytes = 8;  // step + check
  size_t message_bytes(size_t n) const;
  size_t nack_bytes(size_t n) const { return (blocks(n) + 7) / 8; }
  // The adaptive step for a bound on max |x - b| and the block's max |x|.
  float step_for(double bound, double max_abs) const;
  // bound[k]: the sender's bound on max |x - b| in block k (adaptive only).
  void encode(const float* x, size_t n, const float* bound, unsigned char* msg) const;
  // Decodes relative to b into out; failed[k] = 1 where block k's check (or
  // step) says it cannot be decoded (out undefined there). Returns how many.
  size_t decode(const unsigned char* msg, const float* b, size_t n, float* out, unsigned char* failed) const;
  // The step of block k in an encoded message.
  float step(const unsigned char* msg, size_t k) const;

 private:
  int bits_;
  double fixed_;
  size_t block_;
  uint32_t q_;
};

struct TransferCount {
  int64_t sender_bytes = 0, receiver_bytes = 0;  // message and blocks sent again; NACK
  int64_t blocks = 0, fallback_blocks = 0, fallback_bytes = 0, out_of_range = 0;
};

// What one direction of an exchange counts: the message, and for `bad`
// failed blocks (flagged in `failed`; null when bad is 0) the NACK and the
// values sent again. transfer() and SwarmSGD over MPI count with it.
TransferCount count_transfer(const SwarmCodec& c, size_t n, const unsigned char* failed, size_t bad);

// Scratch for transfer(), sized on first use.
struct TransferScratch {
  std::vector<unsigned char> msg, failed;
};

// The protocol's pieces for a sender and a receiver in different processes
// (SwarmSGD over MPI). failed: a flag per block, as SwarmCodec::decode sets.
// How many coordinates the failed blocks hold (what is sent again).
size_t failed_values(const SwarmCodec& c, const unsigned char* failed, size_t n);
// The failed blocks of x, one after another (failed_values floats), and back.
void pack_failed(const SwarmCodec& c, const float* x, const unsigned char* failed, size_t n, float* packed);
void unpack_failed(const SwarmCodec& c, const float* packed, const unsigned char* failed, size_t n, float* out);
// The receiver's bound on max |x - b| per block once out holds every block:
// max |out - b| plus half the block's step (nothing for a block sent again).
void receiver_bounds(const SwarmCodec& c, const unsigned char* msg, const unsigned char* failed, const float* out,
                     const float* b, size_t n, float* dist);

// One direction of an exchange, the whole protocol: encode x (bound as in
// SwarmCodec::encode), decode at a receiver holding b into out, NACK and send
// again the blocks that failed. dist (blocks(n) floats, may be null): the
// receiver's bound on max |x - b| per block afterwards (max |out - b| + e/2,
// exact where sent again). out_of_range compares out with x (an oracle only
// a simulation has).
TransferCount transfer(const SwarmCodec& c, const float* x, const float* b, size_t n, const float* bound, float* out,
                       float* dist, TransferScratch* s);

}  // namespace adasync
