#include "runtime/swarm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <queue>
#include <set>
#include <thread>

#include "datasets/rng.h"
#include "runtime/clock.h"

namespace adasync {

// ------------------------------------------------------------------ graphs
GossipGraph GossipGraph::make(const std::string& kind, int P, int degree, uint64_t seed) {
  if (P < 2) throw UsageError("--variant swarm needs at least 2 workers, found " + std::to_string(P));
  GossipGraph g;
  g.adj_.assign(size_t(P), {});
  auto link = [&](int a, int b) {
    g.adj_[size_t(a)].push_back(b);
    g.adj_[size_t(b)].push_back(a);
  };
  if (kind == "complete") {
    for (int a = 0; a < P; ++a)
      for (int b = a + 1; b < P; ++b) link(a, b);
    g.desc_ = "complete graph";
  } else if (kind == "ring") {
    for (int a = 0; a < P; ++a)
      if (P > 2 || a == 0) link(a, (a + 1) % P);
    g.desc_ = "ring";
  } else if (kind == "torus") {
    int rows = 0;
    for (int r = 2; r * r <= P; ++r)
      if (P % r == 0) rows = r;
    if (rows == 0)
      throw UsageError("--graph torus needs --workers = rows x cols with both >= 2, found " + std::to_string(P));
    const int cols = P / rows;
    std::set<std::pair<int, int>> edges;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) {
        const int a = r * cols + c;
        for (int b : {r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c})
          if (a != b) edges.insert({std::min(a, b), std::max(a, b)});
      }
    for (auto [a, b] : edges) link(a, b);
    g.desc_ = std::to_string(rows) + "x" + std::to_string(cols) + " torus";
  } else if (kind == "regular") {
    if (degree < 1 || degree >= P || (P * degree) % 2 != 0)
      throw UsageError("--degree: a random " + std::to_string(degree) + "-regular graph on " + std::to_string(P) +
                       " nodes needs 1 <= r < P and P * r even");
    // Pairing model: shuffle P * r stubs and pair them; retry until simple and connected.
    Rng rng(seed, 0x67a9);
    for (int attempt = 0; attempt < 10000; ++attempt) {
      std::vector<int> stubs;
      for (int a = 0; a < P; ++a)
        for (int k = 0; k < degree; ++k) stubs.push_back(a);
      for (size_t i = stubs.size() - 1; i > 0; --i) std::swap(stubs[i], stubs[rng.below(i + 1)]);
      std::set<std::pair<int, int>> edges;
      bool simple = true;
      for (size_t i = 0; i < stubs.size() && simple; i += 2) {
        const int a = std::min(stubs[i], stubs[i + 1]), b = std::max(stubs[i], stubs[i + 1]);
        simple = a != b && edges.insert({a, b}).second;
      }
      if (!simple) continue;
      GossipGraph h;
      h.adj_.assign(size_t(P), {});
      for (auto [a, b] : edges) h.adj_[size_t(a)].push_back(b), h.adj_[size_t(b)].push_back(a);
      if (!h.connected()) continue;
      g.adj_ = std::move(h.adj_);
      break;
    }
    if (g.adj_[0].empty()) throw UsageError("--graph regular: no connected simple " + std::to_string(degree) + "-regular graph found");
    g.desc_ = "random " + std::to_string(degree) + "-regular graph";
  } else {
    throw UsageError("--graph: expected complete, ring, torus or regular, found '" + kind + "'");
  }
  for (auto& a : g.adj_) std::sort(a.begin(), a.end());
  return g;
}

bool GossipGraph::connected() const {
  std::vector<char> seen(adj_.size(), 0);
  std::vector<int> stack = {0};
  seen[0] = 1;
  size_t count = 1;
  while (!stack.empty()) {
    const int a = stack.back();
    stack.pop_back();
    for (int b : adj_[size_t(a)])
      if (!seen[size_t(b)]) seen[size_t(b)] = 1, ++count, stack.push_back(b);
  }
  return count == adj_.size();
}

// ------------------------------------------------------------------ quantizer
LatticeQuantizer::LatticeQuantizer(int bits, double step) : bits_(bits), e_(step) {
  if (bits != 0 && bits != 8 && bits != 16)
    throw UsageError("--quantize: expected 0 (full precision), 8 or 16 bits, found " + std::to_string(bits));
  if (bits != 0 && !(step > 0)) throw UsageError("--quant-step: expected a positive step e, found " + std::to_string(step));
  q_ = bits == 0 ? 0 : (1u << bits);
}

size_t LatticeQuantizer::message_bytes(size_t n) const { return n * (bits_ == 0 ? sizeof(float) : size_t(bits_ / 8)); }

double LatticeQuantizer::safe_radius() const { return bits_ == 0 ? INFINITY : double(q_) * e_ / 2; }

void LatticeQuantizer::encode(const float* x, size_t n, unsigned char* msg) const {
  if (bits_ == 0) {
    std::memcpy(msg, x, n * sizeof(float));
    return;
  }
  const double inv = 1.0 / e_;
  const int64_t mask = int64_t(q_) - 1;
  if (bits_ == 8) {
    for (size_t i = 0; i < n; ++i) msg[i] = static_cast<unsigned char>(std::llround(double(x[i]) * inv) & mask);
  } else {
    auto* m16 = reinterpret_cast<uint16_t*>(msg);
    for (size_t i = 0; i < n; ++i) m16[i] = static_cast<uint16_t>(std::llround(double(x[i]) * inv) & mask);
  }
}

void LatticeQuantizer::decode(const unsigned char* msg, const float* b, size_t n, float* out) const {
  if (bits_ == 0) {
    std::memcpy(out, msg, n * sizeof(float));
    return;
  }
  const double qe = double(q_) * e_, inv_qe = 1.0 / qe;
  const auto* m16 = reinterpret_cast<const uint16_t*>(msg);
  for (size_t i = 0; i < n; ++i) {
    const double ec = e_ * double(bits_ == 8 ? msg[i] : m16[i]);
    out[i] = float(ec + qe * std::nearbyint((double(b[i]) - ec) * inv_qe));
  }
}

size_t count_out_of_range(const float* sent, const float* decoded, size_t n, double step) {
  // e/2 plus float rounding of the decoded value.
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double tol = step / 2 + 1e-6 * std::fabs(double(sent[i])) + 1e-12;
    bad += std::fabs(double(decoded[i]) - double(sent[i])) > tol;
  }
  return bad;
}

int64_t SwarmStats::bytes_total() const {
  int64_t s = 0;
  for (int64_t b : bytes_sent) s += b;
  return s;
}

// ------------------------------------------------------------------ engine
struct SwarmEngine::Node {
  std::mutex mu;  // real clock: guards x, pub and the interaction scratch (tmp_a, tmp_b, msg)
  Buffer<float> x, pub, grad, work, tmp_a, tmp_b;
  std::vector<unsigned char> msg;
  std::vector<int32_t> idx;
  Rng rng;
  int steps_left = 0;
  float loss = 0;
};

SwarmEngine::SwarmEngine(const SwarmConfig& cfg, std::vector<GradientWorker*> workers, std::vector<Sampler>* samplers,
                         Straggler* straggler, const float* init, size_t n, int nodes)
    : cfg_(cfg),
      n_(n),
      graph_(GossipGraph::make(cfg.graph, nodes, cfg.degree, cfg.seed)),
      q_(cfg.bits, cfg.quant_step),
      workers_(std::move(workers)),
      samplers_(samplers),
      straggler_(straggler) {
  if (!(cfg.local_steps >= 1)) throw UsageError("--local-steps: expected at least 1, found " + std::to_string(cfg.local_steps));
  stats_.bytes_sent.assign(size_t(nodes), 0);
  for (int i = 0; i < nodes; ++i) {
    auto nd = std::make_unique<Node>();
    for (Buffer<float>* b : {&nd->x, &nd->pub, &nd->grad, &nd->work, &nd->tmp_a, &nd->tmp_b}) {
      *b = Buffer<float>(MemKind::Pinned, n);
    }
    std::memcpy(nd->x.data(), init, n * sizeof(float));
    std::memcpy(nd->pub.data(), init, n * sizeof(float));
    nd->msg.resize(q_.message_bytes(n));
    nd->rng.reseed(cfg.seed, 0x5a12 + uint64_t(i));
    nodes_.push_back(std::move(nd));
  }
  for (int i = 0; i < nodes; ++i) nodes_[size_t(i)]->steps_left = draw_steps(i);
}

SwarmEngine::~SwarmEngine() = default;

int SwarmEngine::draw_steps(int i) {
  if (!cfg_.geometric) return std::max(1, int(std::lround(cfg_.local_steps)));
  // Geometric on {1, 2, ...} with mean H: success probability 1/H.
  Rng& r = nodes_[size_t(i)]->rng;
  const double p = 1.0 / cfg_.local_steps;
  int k = 1;
  while (r.uniform() >= p && k < 1000000) ++k;
  return k;
}

// Q(sender) as decoded by a receiver whose model is receiver_model. msg is
// the scratch of the node running the interaction (its lock is held): another
// initiator may be encoding the same sender's model at the same time.
void SwarmEngine::exchange_into(const float* sender, const float* receiver_model, float* out, int sender_id,
                                unsigned char* msg) {
  q_.encode(sender, n_, msg);
  q_.decode(msg, receiver_model, n_, out);
  const size_t bad = q_.bits() == 0 ? 0 : count_out_of_range(sender, out, n_, q_.step());
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.bytes_sent[size_t(sender_id)] += int64_t(q_.message_bytes(n_));
  stats_.coordinates_sent += int64_t(n_);
  stats_.out_of_range += int64_t(bad);
}

void SwarmEngine::interact(int i, double) {
  ADASYNC_RANGE("swarm/interact");
  Node& a = *nodes_[size_t(i)];
  const auto& nb = graph_.neighbours(i);
  const int j = nb[a.rng.below(nb.size())];
  Node& b = *nodes_[size_t(j)];
  if (cfg_.blocking) {
    // Both models change: lock in index order (as average() does).
    std::unique_lock<std::mutex> l1(nodes_[size_t(std::min(i, j))]->mu, std::defer_lock);
    std::unique_lock<std::mutex> l2(nodes_[size_t(std::max(i, j))]->mu, std::defer_lock);
    l1.lock();
    l2.lock();
    exchange_into(b.x.data(), a.x.data(), a.tmp_b.data(), j, a.msg.data());  // Q(x_j) at i
    exchange_into(a.x.data(), b.x.data(), a.tmp_a.data(), i, a.msg.data());  // Q(x_i) at j
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
    // Non-blocking: the partner's last published copy, the partner untouched.
    {
      std::lock_guard<std::mutex> lk(b.mu);
      std::memcpy(a.tmp_a.data(), b.pub.data(), n_ * sizeof(float));
    }
    std::lock_guard<std::mutex> lk(a.mu);
    exchange_into(a.tmp_a.data(), a.x.data(), a.tmp_b.data(), j, a.msg.data());
    float* x = a.x.data();
    float* s = a.pub.data();
    const float* q = a.tmp_b.data();
    for (size_t k = 0; k < n_; ++k) {
      x[k] = 0.5f * (s[k] + q[k]) + (x[k] - s[k]);
      s[k] = x[k];
    }
  }
  std::lock_guard<std::mutex> lk(stats_mu_);
  ++stats_.interactions;
}

void SwarmEngine::set_model(int i, const float* x) {
  Node& nd = *nodes_[size_t(i)];
  std::lock_guard<std::mutex> lk(nd.mu);
  std::memcpy(nd.x.data(), x, n_ * sizeof(float));
  std::memcpy(nd.pub.data(), x, n_ * sizeof(float));
}

void SwarmEngine::average(float* out, double* consensus) {
  for (auto& nd : nodes_) nd->mu.lock();
  const double inv = 1.0 / double(nodes_.size());
  for (size_t k = 0; k < n_; ++k) {
    double s = 0;
    for (auto& nd : nodes_) s += nd->x.data()[k];
    out[k] = float(s * inv);
  }
  double c = 0;
  for (auto& nd : nodes_)
    for (size_t k = 0; k < n_; ++k) {
      const double d = double(nd->x.data()[k]) - double(out[k]);
      c += d * d;
    }
  *consensus = c * inv;
  for (auto& nd : nodes_) nd->mu.unlock();
}

SwarmStats SwarmEngine::stats() {
  std::lock_guard<std::mutex> lk(stats_mu_);
  return stats_;
}

namespace {
// A node's buffer presented as a snapshot for GradientWorker::pull (the
// buffer outlives the computation; the shared_ptr owns only the header).
SnapshotPtr view(const float* data, size_t n) { return std::make_shared<Snapshot>(Snapshot{0, data, n}); }

void sgd_apply(float* __restrict x, const float* __restrict g, float lr, size_t n) {
  for (size_t k = 0; k < n; ++k) x[k] -= lr * g[k];
}
}  // namespace

double SwarmEngine::run_virtual(SwarmListener& l) {
  const int P = graph_.nodes();
  struct Event {
    double t;
    uint64_t seq;
    int node;
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> q;
  uint64_t seq = 0;
  double now = 0;
  GradientWorker& gw = *workers_[0];
  // The gradient of a step is taken at the model the node has when it starts.
  auto start = [&](int i) {
    Node& nd = *nodes_[size_t(i)];
    (*samplers_)[size_t(i)].next(&nd.idx);
    gw.pull(view(nd.x.data(), n_));
    GradResult r;
    gw.compute(nd.idx, nd.grad.data(), 0, nullptr, 0, &r);
    nd.loss = r.loss;
    q.push(Event{now + std::max(straggler_->draw(i), 1e-9), seq++, i});
  };
  for (int i = 0; i < P; ++i) start(i);
  while (!q.empty()) {
    const Event ev = q.top();
    q.pop();
    if (!l.on_time(ev.t)) break;
    now = ev.t;
    Node& nd = *nodes_[size_t(ev.node)];
    sgd_apply(nd.x.data(), nd.grad.data(), cfg_.lr, n_);
    {
      std::lock_guard<std::mutex> lk(stats_mu_);
      ++stats_.local_steps;
    }
    if (!l.after_step(ev.node, nd.loss, now)) break;
    if (--nd.steps_left <= 0) {
      interact(ev.node, now);
      nd.steps_left = draw_steps(ev.node);
    }
    start(ev.node);
  }
  return now;
}

double SwarmEngine::run_real(SwarmListener& l) {
  const int P = graph_.nodes();
  EXPECTS(int(workers_.size()) == P, workers_.size() << " workers for " << P << " real-time swarm nodes");
  std::atomic<bool> stop{false};
  WallTimer clock;
  auto node_main = [&](int i) {
    name_this_thread("swarm" + std::to_string(i));
    Node& nd = *nodes_[size_t(i)];
    GradientWorker& gw = *workers_[size_t(i)];
    while (!stop) {
      {
        std::lock_guard<std::mutex> lk(nd.mu);  // a private copy: others may average x meanwhile
        std::memcpy(nd.work.data(), nd.x.data(), n_ * sizeof(float));
      }
      (*samplers_)[size_t(i)].next(&nd.idx);
      gw.pull(view(nd.work.data(), n_));
      GradResult r;
      gw.compute(nd.idx, nd.grad.data(), straggler_->draw(i), nullptr, 0, &r);
      {
        std::lock_guard<std::mutex> lk(nd.mu);
        sgd_apply(nd.x.data(), nd.grad.data(), cfg_.lr, n_);
      }
      {
        std::lock_guard<std::mutex> lk(stats_mu_);
        ++stats_.local_steps;
      }
      if (!l.after_step(i, r.loss, clock.seconds())) stop = true;
      if (--nd.steps_left <= 0) {
        interact(i, clock.seconds());
        nd.steps_left = draw_steps(i);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < P; ++i) threads.emplace_back(node_main, i);
  double now = 0;
  while (!stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    now = clock.seconds();
    if (!l.on_time(now)) stop = true;
  }
  for (auto& t : threads) t.join();
  return clock.seconds();
}

}  // namespace adasync
