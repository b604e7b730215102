#include "runtime/algorithms/swarm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <utility>

#include "datasets/rng.h"
#include "kernels/context.h"
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

struct SwarmEngine::Node {
  std::mutex mu;  // real clock: guards x, pub, dist and the interaction scratch (tmp_a, tmp_b, bound, d_*, io)
  Buffer<float> x, pub, grad, tmp_a, tmp_b;
  // Adaptive step: the last max |x - partner| per block this node learnt, and scratch.
  std::vector<float> dist, bound, d_in, d_out;
  TransferScratch io;
  Rng rng;
  std::unique_ptr<HostOptimizer> opt;  // plain SGD: the apply every algorithm shares
  int steps_left = 0;
  InFlight step;                    // virtual clock
  std::atomic<uint64_t> position{0};
};

SwarmEngine::SwarmEngine(const SwarmConfig& cfg, const float* init, size_t n, int nodes, int first, int last,
                         SwarmPeers* peers)
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
  for (int i = first_; i < last_; ++i) {
    auto nd = std::make_unique<Node>();
    for (Buffer<float>* b : {&nd->x, &nd->pub, &nd->grad, &nd->tmp_a, &nd->tmp_b}) {
      *b = Buffer<float>(MemKind::Pinned, n);
    }
    std::memcpy(nd->x.data(), init, n * sizeof(float));
    std::memcpy(nd->pub.data(), init, n * sizeof(float));
    for (auto* v : {&nd->dist, &nd->bound, &nd->d_in, &nd->d_out}) v->assign(blocks_, 0.f);
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
}

SwarmEngine::~SwarmEngine() = default;

// ------------------------------------------------------------ a node's step
const float* SwarmEngine::model(int i) { return node(i).x.data(); }

void SwarmEngine::copy_model(int i, float* out) {
  Node& nd = node(i);
  std::lock_guard<std::mutex> lk(nd.mu);
  std::memcpy(out, nd.x.data(), n_ * sizeof(float));
}

float* SwarmEngine::gradient(int i) { return node(i).grad.data(); }

void SwarmEngine::apply(int i, bool finite) {
  Node& nd = node(i);
  if (finite) {
    // x -= lr g over the parameters; the batch statistics the gradient
    // carries fold into the buffers (ALGORITHMS.md section 8).
    std::lock_guard<std::mutex> lk(nd.mu);
    const float* g = nd.grad.data();
    const float one = 1.f;
    nd.opt->step(nd.x.data(), nd.x.data(), &g, &one, 1, cfg_.lr);
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
  const float* x = s.x.data();
  const float* p = s.pub.data();
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
  if (j < first_ || j >= last_) {
    interact_far(i, j);
    std::lock_guard<std::mutex> lk(stats_mu_);
    ++stats_.interactions;
    return;
  }
  Node& b = node(j);
  if (cfg_.blocking) {
    // Both models change: lock in index order (as average() does).
    std::unique_lock<std::mutex> l1(node(std::min(i, j)).mu, std::defer_lock);
    std::unique_lock<std::mutex> l2(node(std::max(i, j)).mu, std::defer_lock);
    l1.lock();
    l2.lock();
    // i speaks first with its guess; j, having decoded x_i, knows a true
    // bound on max |x_i - x_j| per block and replies with it (never fails).
    if (adaptive) estimate_bound(a, a.bound.data());
    const TransferCount t1 = transfer(codec_, a.x.data(), b.x.data(), n_, a.bound.data(), a.tmp_a.data(),
                                      a.d_in.data(), &a.io);  // Q(x_i) at j
    const TransferCount t2 = transfer(codec_, b.x.data(), a.x.data(), n_, a.d_in.data(), a.tmp_b.data(),
                                      a.d_out.data(), &a.io);  // Q(x_j) at i
    account(t1, i, j);
    account(t2, j, i);
    if (adaptive) {
      b.dist = a.d_in;
      a.dist = a.d_out;
    }
    float* xa = a.x.data();
    float* xb = b.x.data();
    const float* qa = a.tmp_a.data();
    const float* qb = a.tmp_b.data();
    for (size_t k = 0; k < n_; ++k) {
      const float na = 0.5f * (xa[k] + qb[k]), nbv = 0.5f * (xb[k] + qa[k]);
      xa[k] = na;
      xb[k] = nbv;
    }
    std::memcpy(a.pub.data(), xa, n_ * sizeof(float));
    std::memcpy(b.pub.data(), xb, n_ * sizeof(float));
  } else {
    // Non-blocking: the partner's last published copy, the partner untouched;
    // the partner guesses the bound, as it cannot know x_i.
    {
      std::lock_guard<std::mutex> lk(b.mu);
      std::memcpy(a.tmp_a.data(), b.pub.data(), n_ * sizeof(float));
      if (adaptive) estimate_bound(b, a.bound.data());
    }
    std::lock_guard<std::mutex> lk(a.mu);
    const TransferCount t = transfer(codec_, a.tmp_a.data(), a.x.data(), n_, a.bound.data(), a.tmp_b.data(),
                                     a.d_in.data(), &a.io);
    account(t, j, i);
    adopt(a);
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
      std::lock_guard<std::mutex> lk(a.mu);
      std::memcpy(a.tmp_a.data(), a.x.data(), n_ * sizeof(float));
      if (adaptive) estimate_bound(a, a.bound.data());
    }
    peers_->exchange(i, j, a.tmp_a.data(), a.bound.data(), a.tmp_b.data(), a.d_out.data(), &to_j, &from_j);
    far_average(i, a.tmp_a.data(), a.tmp_b.data(), a.d_out.data());
    account(to_j, i, j);
    account(from_j, j, i);
    return;
  }
  // Non-blocking: only this thread writes x_i, so it is read unlocked here.
  peers_->fetch(i, j, a.x.data(), a.tmp_b.data(), a.d_in.data(), &from_j);
  account(from_j, j, i);
  std::lock_guard<std::mutex> lk(a.mu);
  adopt(a);
}

// Non-blocking, the initiator's side: x <- (s + q) / 2 + (x - s) with s its
// published copy and q the partner's decoded into tmp_b; x is published. The
// caller holds a's lock.
void SwarmEngine::adopt(Node& a) {
  if (codec_.adaptive()) a.dist = a.d_in;
  float* x = a.x.data();
  float* s = a.pub.data();
  const float* q = a.tmp_b.data();
  for (size_t k = 0; k < n_; ++k) {
    x[k] = 0.5f * (s[k] + q[k]) + (x[k] - s[k]);
    s[k] = x[k];
  }
}

void SwarmEngine::far_state(int j, bool published, float* copy, float* bound) {
  Node& b = node(j);
  std::lock_guard<std::mutex> lk(b.mu);
  std::memcpy(copy, (published ? b.pub : b.x).data(), n_ * sizeof(float));
  if (published && bound != nullptr && codec_.adaptive()) estimate_bound(b, bound);
}

void SwarmEngine::far_average(int i, const float* s, const float* q, const float* d) {
  Node& a = node(i);
  std::lock_guard<std::mutex> lk(a.mu);
  float* x = a.x.data();
  for (size_t k = 0; k < n_; ++k) x[k] += 0.5f * (s[k] + q[k]) - s[k];
  std::memcpy(a.pub.data(), x, n_ * sizeof(float));
  if (codec_.adaptive()) std::copy(d, d + blocks_, a.dist.begin());
}

void SwarmEngine::node_state(int i, float* x, float* pub, float* dist) {
  Node& nd = node(i);
  std::lock_guard<std::mutex> lk(nd.mu);
  std::memcpy(x, nd.x.data(), n_ * sizeof(float));
  std::memcpy(pub, nd.pub.data(), n_ * sizeof(float));
  std::copy(nd.dist.begin(), nd.dist.end(), dist);
}

void SwarmEngine::set_node_state(int i, const float* x, const float* pub, const float* dist) {
  Node& nd = node(i);
  std::lock_guard<std::mutex> lk(nd.mu);
  std::memcpy(nd.x.data(), x, n_ * sizeof(float));
  std::memcpy(nd.pub.data(), pub, n_ * sizeof(float));
  std::copy(dist, dist + blocks_, nd.dist.begin());
}

std::vector<float> SwarmEngine::copy_models() {
  for (auto& nd : nodes_) nd->mu.lock();
  std::vector<float> out;
  for (int i = first_; i < last_; ++i)
    if (!gone(i)) out.insert(out.end(), node(i).x.data(), node(i).x.data() + n_);
  for (auto& nd : nodes_) nd->mu.unlock();
  return out;
}

void SwarmEngine::set_failed(int i) {
  if (gone_[size_t(i)].exchange(true)) return;
  ++gone_count_;
  if (first_ <= i && i < last_) --live_;
}

void SwarmEngine::set_model(int i, const float* x) {
  Node& nd = node(i);
  std::lock_guard<std::mutex> lk(nd.mu);
  std::memcpy(nd.x.data(), x, n_ * sizeof(float));
  std::memcpy(nd.pub.data(), x, n_ * sizeof(float));
}

void SwarmEngine::average(float* out, double* consensus) {
  for (auto& nd : nodes_) nd->mu.lock();
  // A failed node's model stopped learning: not part of the answer (unless
  // every node failed).
  std::vector<const float*> xs;
  for (int i = first_; i < last_; ++i)
    if (!gone(i)) xs.push_back(node(i).x.data());
  if (xs.empty())
    for (auto& nd : nodes_) xs.push_back(nd->x.data());
  const double inv = 1.0 / double(xs.size());
  for (size_t k = 0; k < n_; ++k) {
    double s = 0;
    for (const float* x : xs) s += x[k];
    out[k] = float(s * inv);
  }
  double c = 0;
  for (const float* x : xs)
    for (size_t k = 0; k < n_; ++k) {
      const double d = double(x[k]) - double(out[k]);
      c += d * d;
    }
  *consensus = c * inv;
  for (auto& nd : nodes_) nd->mu.unlock();
}

SwarmStats SwarmEngine::stats() {
  std::lock_guard<std::mutex> lk(stats_mu_);
  return stats_;
}

std::vector<uint64_t> SwarmEngine::positions() {
  std::vector<uint64_t> p;
  for (const auto& nd : nodes_) p.push_back(nd->position.load(std::memory_order_relaxed));
  return p;
}

nlohmann::json SwarmEngine::save(Checkpoint* c) {
  nlohmann::json nodes = nlohmann::json::array();
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& nd = *nodes_[i];
    std::lock_guard<std::mutex> lk(nd.mu);
    const std::string k = std::to_string(i);
    c->put_floats("swarm:x:" + k, nd.x.data(), n_);
    c->put_floats("swarm:pub:" + k, nd.pub.data(), n_);
    c->put_floats("swarm:dist:" + k, nd.dist.data(), nd.dist.size());
    const bool failed = gone(first_ + int(i));
    nlohmann::json j{{"has_event", false}, {"failed", failed}};
    if (vc_.on) {
      uint64_t st[4];
      nd.rng.get_state(st);
      const InFlight& f = nd.step;
      j = {{"rng", std::vector<uint64_t>(st, st + 4)},
           {"steps_left", nd.steps_left},
           {"loss", f.loss},
           {"finite", f.finite},
           {"computations", f.computations},
           {"failed", failed},
           {"has_event", f.has_event},
           {"due", f.due},
           {"seq", f.seq}};
      if (f.has_event) c->put_floats("swarm:grad:" + k, nd.grad.data(), n_);
    }
    nodes.push_back(j);
  }
  return nlohmann::json{{"virtual", vc_.on},       {"now", vc_.now},  {"seq", vc_.seq},
                        {"pending", vc_.pending}, {"nodes", nodes}, {"stats", stats()}};
}

void SwarmEngine::restore(const nlohmann::json& j, const Checkpoint& c) {
  const auto& nodes = j.at("nodes");
  if (nodes.size() != nodes_.size())
    throw CheckpointError("SwarmSGD state for " + std::to_string(nodes.size()) + " nodes, this run has " +
                          std::to_string(nodes_.size()));
  const bool exact = j.at("virtual").get<bool>();
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& nd = *nodes_[i];
    const std::string k = std::to_string(i);
    auto put = [&](const std::string& name, float* out, size_t n) {
      const std::vector<float> v = c.floats(name);
      if (v.size() != n) throw CheckpointError(name + ": expected " + std::to_string(n) + " values, found " + std::to_string(v.size()));
      std::copy(v.begin(), v.end(), out);
    };
    put("swarm:x:" + k, nd.x.data(), n_);
    put("swarm:pub:" + k, nd.pub.data(), n_);
    put("swarm:dist:" + k, nd.dist.data(), nd.dist.size());
    const auto& nj = nodes[i];
    gone_[size_t(first_) + i] = nj.value("failed", false);  // (older checkpoints: none failed)
    if (!exact) continue;
    const auto rng = nj.at("rng").get<std::vector<uint64_t>>();
    if (rng.size() != 4) throw CheckpointError("SwarmSGD node " + k + ": RNG state of " + std::to_string(rng.size()) + " words");
    nd.rng.set_state(rng.data());
    nd.steps_left = nj.at("steps_left");
    InFlight& f = nd.step;
    f.loss = nj.at("loss");
    f.finite = nj.value("finite", true);
    f.computations = nj.value("computations", int64_t(0));
    f.has_event = nj.at("has_event");
    f.due = nj.at("due");
    f.seq = nj.at("seq");
    if (f.has_event) put("swarm:grad:" + k, nd.grad.data(), n_);
  }
  live_ = 0;
  for (int i = first_; i < last_; ++i) live_ += gone(i) ? 0 : 1;
  gone_count_ = 0;
  for (int i = 0; i < graph_.nodes(); ++i) gone_count_ += gone(i) ? 1 : 0;
  if (exact) {
    vc_.now = j.at("now");
    vc_.seq = j.at("seq");
    vc_.pending = j.at("pending");
    vc_.resumed = true;
  }
  SwarmStats st = j.at("stats").get<SwarmStats>();
  st.steps_by_node.resize(size_t(graph_.nodes()), 0);  // (older checkpoints have none)
  st.taken_by_node.resize(size_t(graph_.nodes()), 0);
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_ = std::move(st);
}


}  // namespace adasync
