#include "runtime/algorithms/swarm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <system_error>
#include <utility>

#include "datasets/rng.h"
#include "kernels/context.h"
#include "runtime/algorithms/swarm_node.h"
#include "runtime/engine/optimizer.h"

namespace adasync {
// ------------------------------------------------------------------ engine
int64_t SwarmStats::bytes_total() const {
  int64_t s = 0;
  for (int64_t b : bytes_sent) s += b;
  return s;
}

SwarmStats& SwarmStats::operator+=(const SwarmStats& o) {
  local_steps += o.local_steps;
  interactions += o.interactions;
  by_message += o.by_message;
  out_of_range += o.out_of_range;
  coordinates_sent += o.coordinates_sent;
  blocks_sent += o.blocks_sent;
  fallback_blocks += o.fallback_blocks;
  fallback_bytes += o.fallback_bytes;
  if (bytes_sent.size() < o.bytes_sent.size()) bytes_sent.resize(o.bytes_sent.size(), 0);
  for (size_t i = 0; i < o.bytes_sent.size(); ++i) bytes_sent[i] += o.bytes_sent[i];
  nonfinite += o.nonfinite;
  for (auto [mine, theirs] : {std::pair{&steps_by_node, &o.steps_by_node}, std::pair{&taken_by_node, &o.taken_by_node}}) {
    if (mine->size() < theirs->size()) mine->resize(theirs->size(), 0);
    for (size_t i = 0; i < theirs->size(); ++i) (*mine)[i] += (*theirs)[i];
  }
  return *this;
}

void init_shared_lock(pthread_mutex_t* m) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  const int r = pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  if (r != 0) throw std::system_error(r, std::generic_category(), "SwarmSGD: a node lock in shared memory");
}

SwarmEngine::SwarmEngine(const SwarmConfig& cfg, const float* init, size_t n, int nodes, int first, int last,
                         SwarmPeers* peers, const std::vector<SwarmSharedNode>* shared)
    : cfg_(cfg),
      n_(n),
      graph_(GossipGraph::make(cfg.graph, nodes, cfg.degree, cfg.seed)),
      codec_(cfg.bits, cfg.quant_step, cfg.quant_block),
      blocks_(codec_.blocks(n)),
      // Non-blocking: the partner guesses for a stale copy and a receiver it has not seen.
      margin_(cfg.quant_margin > 0 ? cfg.quant_margin : (cfg.blocking ? 2 : 4)),
      first_(first),
      last_(last < 0 ? nodes : last),
      peers_(peers) {
  EXPECTS(0 <= first_ && first_ < last_ && last_ <= nodes, "local nodes [" << first_ << ", " << last_ << ") of " << nodes);
  EXPECTS(cfg.local_steps >= 1, "at least 1 local step, found " << cfg.local_steps);
  EXPECTS(margin_ >= 1, "a quantisation margin of at least 1, found " << margin_);
  gone_ = std::make_unique<std::atomic<bool>[]>(size_t(nodes));
  for (int i = 0; i < nodes; ++i) gone_[size_t(i)].store(false);
  stats_.bytes_sent.assign(size_t(nodes), 0);
  stats_.steps_by_node.assign(size_t(nodes), 0);
  stats_.taken_by_node.assign(size_t(nodes), 0);
  EXPECTS(shared == nullptr || shared->size() == size_t(nodes),
          "shared memory for " << (shared ? shared->size() : 0) << " nodes of " << nodes);
  auto in_shared = [&](int i) { return shared != nullptr && (*shared)[size_t(i)].lock != nullptr; };
  for (int i = first_; i < last_; ++i) {
    auto nd = std::make_unique<Node>();
    for (Buffer<float>* b : {&nd->grad, &nd->tmp_a, &nd->tmp_b}) *b = Buffer<float>(MemKind::Pinned, n);
    for (auto* v : {&nd->bound, &nd->d_in, &nd->d_out}) v->assign(blocks_, 0.f);
    if (in_shared(i)) {
      const SwarmSharedNode& s = (*shared)[size_t(i)];
      nd->mu.shared = s.lock;
      nd->x = s.x, nd->pub = s.pub, nd->dist = s.dist;
      std::fill(nd->dist, nd->dist + blocks_, 0.f);
    } else {
      for (Buffer<float>* b : {&nd->own_x, &nd->own_pub}) *b = Buffer<float>(MemKind::Pinned, n);
      nd->own_dist.assign(blocks_, 0.f);
      nd->x = nd->own_x.data(), nd->pub = nd->own_pub.data(), nd->dist = nd->own_dist.data();
    }
    std::memcpy(nd->x, init, n * sizeof(float));
    std::memcpy(nd->pub, init, n * sizeof(float));
    nd->io.msg.resize(codec_.message_bytes(n));
    nd->io.failed.resize(blocks_);
    nd->rng.reseed(cfg.seed, 0x5a12 + uint64_t(i));
    OptimizerConfig sgd;
    sgd.momentum = 0;
    nd->opt = std::make_unique<HostOptimizer>(sgd, n, nullptr);
    if (cfg.layout.total == n) nd->opt->set_layout(cfg.layout);
    nodes_.push_back(std::move(nd));
  }
  for (int i = first_; i < last_; ++i) node(i).steps_left = draw_steps(i);
  live_ = last_ - first_;
  views_.resize(size_t(nodes));
  for (int j = 0; j < nodes; ++j) {
    if ((first_ <= j && j < last_) || !in_shared(j)) continue;
    auto v = std::make_unique<Node>();  // the arrays and the lock: an initiator's scratch is its own node's
    const SwarmSharedNode& s = (*shared)[size_t(j)];
    v->mu.shared = s.lock;
    v->x = s.x, v->pub = s.pub, v->dist = s.dist;
    views_[size_t(j)] = std::move(v);
  }
}

SwarmEngine::Node* SwarmEngine::near(int j) {
  if (first_ <= j && j < last_) return &node(j);
  return views_[size_t(j)].get();
}

SwarmEngine::~SwarmEngine() = default;

// ------------------------------------------------------------ a node's step
const float* SwarmEngine::model(int i) { return node(i).x; }

void SwarmEngine::copy_model(int i, float* out) {
  Node& nd = node(i);
  std::lock_guard<NodeLock> lk(nd.mu);
  std::memcpy(out, nd.x, n_ * sizeof(float));
}

float* SwarmEngine::gradient(int i) { return node(i).grad.data(); }

void SwarmEngine::apply(int i, bool finite) {
  Node& nd = node(i);
  if (finite) {
    // x -= lr g over the parameters; the batch statistics the gradient
    // carries fold into the buffers (ALGORITHMS.md section 8).
    std::lock_guard<NodeLock> lk(nd.mu);
    const float* g = nd.grad.data();
    const float one = 1.f;
    nd.opt->step(nd.x, nd.x, &g, &one, 1, cfg_.lr);
  }
  std::lock_guard<std::mutex> lk(stats_mu_);
  ++(finite ? stats_.local_steps : stats_.nonfinite);
  ++stats_.steps_by_node[size_t(i)];
  if (finite) ++stats_.taken_by_node[size_t(i)];
}

void SwarmEngine::after_step(int i) {
  Node& nd = node(i);
  if (--nd.steps_left <= 0) {
    interact(i);
    nd.steps_left = draw_steps(i);
  }
}

bool SwarmEngine::gone(int i) { return gone_[size_t(i)].load(); }

void SwarmEngine::set_position(int i, uint64_t p) { node(i).position.store(p, std::memory_order_relaxed); }

SwarmEngine::InFlight& SwarmEngine::in_flight(int i) { return node(i).step; }

int SwarmEngine::draw_steps(int i) {
  if (!cfg_.geometric) return std::max(1, int(std::lround(cfg_.local_steps)));
  // Geometric on {1, 2, ...} with mean H: success probability 1/H.
  Rng& r = node(i).rng;
  const double p = 1.0 / cfg_.local_steps;
  int k = 1;
  while (r.uniform() >= p && k < 1000000) ++k;
  return k;
}

// The sender's guess at max |x - b| per block when it cannot know b (our
// rule): the distance it last learnt to a partner, plus twice its own drift
// since that exchange (the partner drifted too), times the margin. A guess
// that falls short costs that block a NACK and a full-precision resend, never
// a wrong decode. The caller holds the sender's lock.
void SwarmEngine::estimate_bound(const Node& s, float* bound) const {
  const float* x = s.x;
  const float* p = s.pub;
  const size_t B = codec_.block();
  for (size_t k = 0, off = 0; k < blocks_; ++k, off += B) {
    const size_t end = std::min(n_, off + B);
    float drift = 0;
    for (size_t i = off; i < end; ++i) drift = std::max(drift, std::fabs(x[i] - p[i]));
    bound[k] = float(margin_ * (double(s.dist[k]) + 2.0 * double(drift)));
  }
}

void SwarmEngine::account(const TransferCount& t, int sender, int receiver) {
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.bytes_sent[size_t(sender)] += t.sender_bytes;
  stats_.bytes_sent[size_t(receiver)] += t.receiver_bytes;
  stats_.coordinates_sent += int64_t(n_);
  stats_.out_of_range += t.out_of_range;
  stats_.blocks_sent += t.blocks;
  stats_.fallback_blocks += t.fallback_blocks;
  stats_.fallback_bytes += t.fallback_bytes;
}

// Uniform over the neighbours still there (on other processes: all of them).
// With none gone, the same draw as without failures.
int SwarmEngine::draw_partner(int i) {
  const auto& nb = graph_.neighbours(i);
  Rng& r = node(i).rng;
  if (gone_count_.load() == 0) return nb[r.below(nb.size())];
  std::vector<int> there;
  for (int j : nb)
    if (!gone(j)) there.push_back(j);
  return there.empty() ? -1 : there[r.below(there.size())];
}

bool SwarmEngine::leave(int i, const std::string& what, double now, SwarmListener& l) {
  if (gone_[size_t(i)].exchange(true)) return live_.load() > 0;
  ++gone_count_;
  const int left = --live_;
  return l.node_failed(i, what, left, now);
}

// Scratch lives in the initiator's node (its lock is held): another initiator
// may be encoding the same partner's model at the same time.
void SwarmEngine::interact(int i) {
  ADASYNC_RANGE("swarm/interact");
  Node& a = node(i);
  const int j = draw_partner(i);
  if (j < 0) return;  // alone: its neighbours have left
  const bool adaptive = codec_.adaptive();
  if (near(j) == nullptr) {
    interact_far(i, j);
    std::lock_guard<std::mutex> lk(stats_mu_);
    ++stats_.interactions;
    ++stats_.by_message;
    return;
  }
  Node& b = *near(j);
  if (cfg_.blocking) {
    // Both models change: lock in index order (as average() does; over
    // shared memory, every process does).
    std::unique_lock<NodeLock> l1(near(std::min(i, j))->mu, std::defer_lock);
    std::unique_lock<NodeLock> l2(near(std::max(i, j))->mu, std::defer_lock);
    l1.lock();
    l2.lock();
    if (codec_.exact()) {
      // Full precision: Q is the identity and both sides hold (x_i + x_j) / 2,
      // bit for bit what the transfers below would give, in one pass.
      const TransferCount t = count_transfer(codec_, n_, nullptr, 0);
      account(t, i, j);
      account(t, j, i);
      float *xa = a.x, *xb = b.x, *pa = a.pub, *pb = b.pub;
      for (size_t k = 0; k < n_; ++k) {
        const float m = 0.5f * (xa[k] + xb[k]);
        xa[k] = xb[k] = pa[k] = pb[k] = m;
      }
      std::lock_guard<std::mutex> lk(stats_mu_);
      ++stats_.interactions;
      return;
    }
    // i speaks first with its guess; j, having decoded x_i, knows a true
    // bound on max |x_i - x_j| per block and replies with it (never fails).
    if (adaptive) estimate_bound(a, a.bound.data());
    const TransferCount t1 =
        transfer(codec_, a.x, b.x, n_, a.bound.data(), a.tmp_a.data(), a.d_in.data(), &a.io);  // Q(x_i) at j
    const TransferCount t2 =
        transfer(codec_, b.x, a.x, n_, a.d_in.data(), a.tmp_b.data(), a.d_out.data(), &a.io);  // Q(x_j) at i
    account(t1, i, j);
    account(t2, j, i);
    if (adaptive) {
      std::copy(a.d_in.begin(), a.d_in.end(), b.dist);
      std::copy(a.d_out.begin(), a.d_out.end(), a.dist);
    }
    float* xa = a.x;
    float* xb = b.x;
    const float* qa = a.tmp_a.data();
    const float* qb = a.tmp_b.data();
    for (size_t k = 0; k < n_; ++k) {
      const float na = 0.5f * (xa[k] + qb[k]), nbv = 0.5f * (xb[k] + qa[k]);
      xa[k] = na;
      xb[k] = nbv;
    }
    std::memcpy(a.pub, xa, n_ * sizeof(float));
    std::memcpy(b.pub, xb, n_ * sizeof(float));
  } else {
    // Non-blocking: the partner's last published copy, the partner untouched;
    // the partner guesses the bound, as it cannot know x_i.
    {
      std::lock_guard<NodeLock> lk(b.mu);
      std::memcpy(a.tmp_a.data(), b.pub, n_ * sizeof(float));
      if (adaptive) estimate_bound(b, a.bound.data());
    }
    std::lock_guard<NodeLock> lk(a.mu);
    if (codec_.exact()) {  // full precision: the copy is Q(p_j)
      account(count_transfer(codec_, n_, nullptr, 0), j, i);
      adopt(a, a.tmp_a.data());
    } else {
      const TransferCount t =
          transfer(codec_, a.tmp_a.data(), a.x, n_, a.bound.data(), a.tmp_b.data(), a.d_in.data(), &a.io);
      account(t, j, i);
      adopt(a, a.tmp_b.data());
    }
  }
  std::lock_guard<std::mutex> lk(stats_mu_);
  ++stats_.interactions;
}

// With a node on another process. No lock is held while the messages travel
// (the far side may be waiting for one of ours): blocking works on a copy and
// applies the average as a difference, so that what the node's own thread
// and other exchanges did meanwhile is kept.
void SwarmEngine::interact_far(int i, int j) {
  EXPECTS(peers_ != nullptr, "node " << j << " is not in this process and there are no peers");
  Node& a = node(i);
  const bool adaptive = codec_.adaptive();
  TransferCount to_j, from_j;
  if (cfg_.blocking) {
    {
      std::lock_guard<NodeLock> lk(a.mu);
      std::memcpy(a.tmp_a.data(), a.x, n_ * sizeof(float));
      if (adaptive) estimate_bound(a, a.bound.data());
    }
    peers_->exchange(i, j, a.tmp_a.data(), a.bound.data(), a.tmp_b.data(), a.d_out.data(), &to_j, &from_j);
    far_average(i, a.tmp_a.data(), a.tmp_b.data(), a.d_out.data());
    account(to_j, i, j);
    account(from_j, j, i);
    return;
  }
  // Non-blocking: only this thread writes x_i, so it is read unlocked here.
  peers_->fetch(i, j, a.x, a.tmp_b.data(), a.d_in.data(), &from_j);
  account(from_j, j, i);
  std::lock_guard<NodeLock> lk(a.mu);
  adopt(a, a.tmp_b.data());
}

// Non-blocking, the initiator's side: x <- (s + q) / 2 + (x - s) with s its
// published copy and q the partner's, decoded; x is published. The caller
// holds a's lock.
void SwarmEngine::adopt(Node& a, const float* q) {
  if (codec_.adaptive()) std::copy(a.d_in.begin(), a.d_in.end(), a.dist);
  float* x = a.x;
  float* s = a.pub;
  for (size_t k = 0; k < n_; ++k) {
    x[k] = 0.5f * (s[k] + q[k]) + (x[k] - s[k]);
    s[k] = x[k];
  }
}

void SwarmEngine::far_state(int j, bool published, float* copy, float* bound) {
  Node& b = node(j);
  std::lock_guard<NodeLock> lk(b.mu);
  std::memcpy(copy, (published ? b.pub : b.x), n_ * sizeof(float));
  if (published && bound != nullptr && codec_.adaptive()) estimate_bound(b, bound);
}

void SwarmEngine::far_average(int i, const float* s, const float* q, const float* d) {
  Node& a = node(i);
  std::lock_guard<NodeLock> lk(a.mu);
  float* x = a.x;
  for (size_t k = 0; k < n_; ++k) x[k] += 0.5f * (s[k] + q[k]) - s[k];
  std::memcpy(a.pub, x, n_ * sizeof(float));
  if (codec_.adaptive()) std::copy(d, d + blocks_, a.dist);
}

}  // namespace adasync
