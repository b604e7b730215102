// SwarmEngine: the state a run reads (models, averages, counters) and the
// checkpoints that hold it.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "runtime/algorithms/swarm.h"
#include "runtime/algorithms/swarm_node.h"

namespace adasync {
void SwarmEngine::node_state(int i, float* x, float* pub, float* dist) {
  Node& nd = node(i);
  std::lock_guard<NodeLock> lk(nd.mu);
  std::memcpy(x, nd.x, n_ * sizeof(float));
  std::memcpy(pub, nd.pub, n_ * sizeof(float));
  std::copy(nd.dist, nd.dist + blocks_, dist);
}

void SwarmEngine::set_node_state(int i, const float* x, const float* pub, const float* dist) {
  Node& nd = node(i);
  std::lock_guard<NodeLock> lk(nd.mu);
  std::memcpy(nd.x, x, n_ * sizeof(float));
  std::memcpy(nd.pub, pub, n_ * sizeof(float));
  std::copy(dist, dist + blocks_, nd.dist);
}

std::vector<float> SwarmEngine::copy_models() {
  for (auto& nd : nodes_) nd->mu.lock();
  std::vector<float> out;
  for (int i = first_; i < last_; ++i)
    if (!gone(i)) out.insert(out.end(), node(i).x, node(i).x + n_);
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
  std::lock_guard<NodeLock> lk(nd.mu);
  std::memcpy(nd.x, x, n_ * sizeof(float));
  std::memcpy(nd.pub, x, n_ * sizeof(float));
}

void SwarmEngine::average(float* out, double* consensus) {
  for (auto& nd : nodes_) nd->mu.lock();
  // A failed node's model stopped learning: not part of the answer (unless
  // every node failed).
  std::vector<const float*> xs;
  for (int i = first_; i < last_; ++i)
    if (!gone(i)) xs.push_back(node(i).x);
  if (xs.empty())
    for (auto& nd : nodes_) xs.push_back(nd->x);
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
    std::lock_guard<NodeLock> lk(nd.mu);
    const std::string k = std::to_string(i);
    c->put_floats("swarm:x:" + k, nd.x, n_);
    c->put_floats("swarm:pub:" + k, nd.pub, n_);
    c->put_floats("swarm:dist:" + k, nd.dist, blocks_);
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
  return nlohmann::json{{"virtual", vc_.on},      {"now", vc_.now}, {"seq", vc_.seq},
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
      if (v.size() != n)
        throw CheckpointError(name + ": expected " + std::to_string(n) + " values, found " + std::to_string(v.size()));
      std::copy(v.begin(), v.end(), out);
    };
    put("swarm:x:" + k, nd.x, n_);
    put("swarm:pub:" + k, nd.pub, n_);
    put("swarm:dist:" + k, nd.dist, blocks_);
    const auto& nj = nodes[i];
    gone_[size_t(first_) + i] = nj.value("failed", false);  // (older checkpoints: none failed)
    if (!exact) continue;
    const auto rng = nj.at("rng").get<std::vector<uint64_t>>();
    if (rng.size() != 4)
      throw CheckpointError("SwarmSGD node " + k + ": RNG state of " + std::to_string(rng.size()) + " words");
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
