// SwarmSGD over MPI, rank 0's side: it starts the worker ranks' nodes, counts
// their steps, gathers the models to average, evaluate and checkpoint, and
// stops them (see mpi.h; the worker ranks' side is mpi_swarm_rank.cc).
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "runtime/algorithms/swarm.h"
#include "runtime/output.h"
#include "runtime/stop_request.h"  // the drain is short once the job is going down
#include "runtime/transport/mpi/mpi.h"
#include "runtime/transport/mpi/mpi_internal.h"
namespace adasync {
using namespace mpi_detail;
namespace {

// A gather that does not complete (an error halfway) leaves ranks blocked in
// its receives: the job then ends with MPI_Abort, not a hang in MPI_Finalize.
class AbortUnlessDone {
 public:
  explicit AbortUnlessDone(MpiWorld& w) : world_(w) {}
  ~AbortUnlessDone() {
    if (!done_) world_.unclean = true;
  }
  void done() { done_ = true; }

 private:
  MpiWorld& world_;
  bool done_ = false;
};

}  // namespace

// ------------------------------------------------------------------ rank 0
namespace {
// Rank 0's waits on a worker rank go on while the job does; once a stop
// signal has come they last kStopGraceSeconds more (end_wait_limit), then give
// up on the rank: a dead rank must not hold rank 0 from its summary.
class StopGrace {
 public:
  bool expired() {
    if (stop_signal() == 0) return false;
    const auto now = std::chrono::steady_clock::now();
    if (signalled_ == std::chrono::steady_clock::time_point{}) signalled_ = now;
    return now - signalled_ > std::chrono::duration<double>(kStopGraceSeconds);
  }

 private:
  std::chrono::steady_clock::time_point signalled_{};
};

// A gather's text from rank r; nullopt once StopGrace gives up on r.
std::optional<std::string> gather_text(int r, int tag) {
  MPI_Message msg;
  MPI_Status st;
  StopGrace grace;
  Backoff backoff;
  while (!probe(r, &msg, &st, tag)) {
    if (grace.expired()) return std::nullopt;
    backoff.idle();
  }
  return take_text(&msg, st);
}

// Completes a transfer with rank r under StopGrace. A transfer given up on
// stays posted (a rank that died halfway through a large message would
// block a plain MPI_Recv or MPI_Send for good): its buffer is kept alive
// until the process ends, so that the library never touches freed memory.
template <class T>
bool complete_or_give_up(MPI_Request* req, std::vector<T>* buf, const char* what) {
  StopGrace grace;
  Backoff backoff;
  for (;;) {
    int flag = 0;
    check(MPI_Test(req, &flag, MPI_STATUS_IGNORE), what);
    if (flag) return true;
    if (grace.expired()) break;
    backoff.idle();
  }
  static std::mutex mu;
  static auto* kept = new std::vector<std::vector<T>>;  // never freed: see above
  std::lock_guard<std::mutex> lk(mu);
  kept->push_back(std::move(*buf));  // the same heap block: the request's pointer stays good
  return false;
}
template <class T>
bool receive_or_give_up(std::vector<T>* buf, int r, int tag, MPI_Comm comm, const char* what) {
  MPI_Request req;
  check(MPI_Irecv(buf->data(), int(buf->size() * sizeof(T)), MPI_BYTE, r, tag, comm, &req), what);
  return complete_or_give_up(&req, buf, what);
}
template <class T>
bool send_or_give_up(std::vector<T> copy, int r, int tag, MPI_Comm comm, const char* what) {
  MPI_Request req;
  check(MPI_Isend(copy.data(), int(copy.size() * sizeof(T)), MPI_BYTE, r, tag, comm, &req), what);
  return complete_or_give_up(&req, &copy, what);
}
}  // namespace

struct MpiSwarm::Impl {
  Impl(MpiWorld& w, int P, size_t params, size_t blocks) : world(w), nodes(P), n(params), nb(blocks) {
    base.bytes_sent.assign(size_t(P), 0);
    failed.assign(size_t(P), 0);
  }
  MpiWorld& world;
  int nodes;
  size_t n, nb;
  std::vector<char> failed;  // per node: its worker failed (reported, or in the resumed checkpoint)
  size_t per_node() const { return 2 * n + nb; }  // model, published copy, distances
  std::mutex mu;  // one gather at a time
  // Ranks count from zero: their counters go on top of `base`, a resumed
  // checkpoint's. `stats`: the latest totals.
  SwarmStats base, stats;
  std::vector<float> resumed;  // every node's state, node after node (resume)
  std::vector<uint64_t> positions;  // as of the last checkpoint's gather
  bool stopped = false, released = false;
  std::vector<int> lost;  // ranks that did not answer a gather or confirm the stop: no gather reaches them
  bool is_lost(int r) const { return std::find(lost.begin(), lost.end(), r) != lost.end(); }
  void lose(int r) {
    if (!is_lost(r)) lost.push_back(r);
    world.unclean = true;
  }
};

MpiSwarm::MpiSwarm(MpiWorld& world, const SwarmConfig& cfg, int nodes, size_t params)
    : impl_(new Impl(world, nodes, params, SwarmCodec(cfg.bits, cfg.quant_step, cfg.quant_block).blocks(params))) {
  const Impl& m = *impl_;
  const auto [first, last] = world.workers_of(1, nodes);
  if (params * sizeof(double) >= size_t(INT_MAX) ||
      size_t(last - first + 1) * m.per_node() * sizeof(float) >= size_t(INT_MAX))
    throw UsageError("MPI transport: the model's " + std::to_string(params) + " parameters for " +
                     std::to_string(last - first + 1) + " nodes a rank are over one MPI message's 2 GB");
}

void MpiSwarm::restore(const nlohmann::json& j, const Checkpoint& c) {
  Impl& m = *impl_;
  const auto& nodes = j.at("nodes");
  if (int(nodes.size()) != m.nodes)
    throw CheckpointError("SwarmSGD state for " + std::to_string(nodes.size()) + " nodes, this run has " +
                          std::to_string(m.nodes));
  m.resumed.assign(size_t(m.nodes) * m.per_node(), 0.f);
  for (int i = 0; i < m.nodes; ++i) {
    const std::string k = std::to_string(i);
    float* out = m.resumed.data() + size_t(i) * m.per_node();
    for (const auto& [name, off, len] : {std::tuple<std::string, size_t, size_t>{"swarm:x:" + k, 0, m.n},
                                         {"swarm:pub:" + k, m.n, m.n},
                                         {"swarm:dist:" + k, 2 * m.n, m.nb}}) {
      const std::vector<float> v = c.floats(name);
      if (v.size() != len)
        throw CheckpointError(name + ": expected " + std::to_string(len) + " values, found " + std::to_string(v.size()));
      std::copy(v.begin(), v.end(), out + off);
    }
  }
  m.base = m.stats = j.at("stats").get<SwarmStats>();
  for (int i = 0; i < m.nodes; ++i) m.failed[size_t(i)] = nodes[size_t(i)].value("failed", false);
}
// Ranks whose nodes have stopped wait for this (before the stop, the run's
// end stops them: MpiWorld::stop_workers).
MpiSwarm::~MpiSwarm() {
  try {
    if (impl_->stopped) release();
  } catch (const std::exception&) {
    impl_->world.unclean = true;
  }
}

void MpiSwarm::start(const float* init, const std::vector<uint64_t>& positions) {
  Impl& m = *impl_;
  const bool resume = !m.resumed.empty();
  m.positions = positions;
  for (int r = 1; r < m.world.size(); ++r) {
    const auto [first, last] = m.world.workers_of(r, m.nodes);
    std::vector<uint64_t> mine;
    std::vector<int> failed;
    for (int i = first; i < last && size_t(i) < positions.size(); ++i) mine.push_back(positions[size_t(i)]);
    for (int i = 0; i < m.nodes; ++i)  // every rank's: a failed node is nobody's partner
      if (m.failed[size_t(i)]) failed.push_back(i);
    send_text(nlohmann::json{{"params", m.n}, {"swarm", true}, {"resume", resume}, {"positions", mine}, {"failed", failed}}
                  .dump(),
              r, kStart);
    if (resume)
      check(MPI_Send(m.resumed.data() + size_t(first) * m.per_node(),
                     int(size_t(last - first) * m.per_node() * sizeof(float)), MPI_BYTE, r, kSwInit, g_data),
            "start");
    else
      check(MPI_Send(init, int(m.n * sizeof(float)), MPI_BYTE, r, kSwInit, g_data), "start");
  }
  m.resumed = {};
}

// Real-clock form of SwarmEngine::save: every node's arrays, the counters.
nlohmann::json MpiSwarm::save(Checkpoint* c) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lk(m.mu);
  AbortUnlessDone guard(m.world);
  if (!m.lost.empty())
    throw OutputError("no checkpoint written: worker rank " + std::to_string(m.lost.front()) +
                      " is lost with its nodes' state, so none can hold every node");
  for (int r = 1; r < m.world.size(); ++r) send_small(WordMsg{0, -1}, r, kSwSave);
  SwarmStats total = m.base;
  std::vector<uint64_t> positions;
  nlohmann::json nodes = nlohmann::json::array();
  for (int r = 1; r < m.world.size(); ++r) {
    const std::optional<std::string> text = gather_text(r, kSwState);
    if (!text) {
      m.lose(r);
      guard.done();
      throw OutputError("no checkpoint written: worker rank " + std::to_string(r) +
                        " did not send its nodes' state (the job is stopping)");
    }
    const nlohmann::json j = nlohmann::json::parse(*text);
    total += j.at("stats").get<SwarmStats>();
    const auto p = j.at("positions").get<std::vector<uint64_t>>();
    positions.insert(positions.end(), p.begin(), p.end());
    const auto [first, last] = m.world.workers_of(r, m.nodes);
    std::vector<float> state(size_t(last - first) * m.per_node());
    if (!receive_or_give_up(&state, r, kSwStateData, g_data, "state")) {
      m.lose(r);
      guard.done();
      throw OutputError("no checkpoint written: worker rank " + std::to_string(r) +
                        " stopped sending its nodes' state (the job is stopping)");
    }
    for (int i = first; i < last; ++i) {
      const float* s = state.data() + size_t(i - first) * m.per_node();
      const std::string k = std::to_string(i);
      c->put_floats("swarm:x:" + k, s, m.n);
      c->put_floats("swarm:pub:" + k, s + m.n, m.n);
      c->put_floats("swarm:dist:" + k, s + 2 * m.n, m.nb);
      nodes.push_back(nlohmann::json{{"has_event", false}, {"failed", bool(m.failed[size_t(i)])}});
    }
  }
  m.positions = positions;
  if (!m.stopped) m.stats = total;
  guard.done();
  return nlohmann::json{{"virtual", false}, {"now", 0.0},    {"seq", 0},
                        {"pending", -1},    {"nodes", nodes}, {"stats", total}};
}

std::vector<uint64_t> MpiSwarm::positions() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->positions;
}

double MpiSwarm::run(SwarmListener& l) {
  Impl& m = *impl_;
  WallTimer clock;
  double tick = 0;
  std::vector<StepMsg> steps;
  bool going = true;
  while (going) {
    if (clock.seconds() - tick >= 0.02) {  // a stream of steps must not hold off time limits
      tick = clock.seconds();
      if (!l.on_time(tick)) break;
    }
    MPI_Message msg;
    MPI_Status st;
    if (!probe(MPI_ANY_SOURCE, &msg, &st, kSwStep)) {
      std::this_thread::sleep_for(kSwarmPoll);  // the ranks send what their nodes did meanwhile at once
      continue;
    }
    const int r = st.MPI_SOURCE;
    const int bytes = message_bytes(st);
    if (bytes <= 0 || bytes % int(sizeof(StepMsg)) != 0)
      throw std::runtime_error("MPI: malformed steps message from rank " + std::to_string(r) + " (" +
                               std::to_string(bytes) + " bytes)");
    steps.resize(size_t(bytes) / sizeof(StepMsg));
    check(MPI_Mrecv(steps.data(), bytes, MPI_BYTE, &msg, MPI_STATUS_IGNORE), "steps");
    for (const StepMsg& s : steps) {
      if (s.node < 0 || s.node >= m.nodes || m.world.rank_of(s.node, m.nodes) != r)
        throw std::runtime_error("MPI: rank " + std::to_string(r) + " reported a step of node " +
                                 std::to_string(s.node));
      if (s.kind == kStepFailed) {
        const std::string what = receive_text(r, kSwFailedText);
        int alive = 0;
        {
          std::lock_guard<std::mutex> lk(m.mu);
          m.failed[size_t(s.node)] = 1;
          for (char f : m.failed) alive += f ? 0 : 1;
        }
        going = l.node_failed(s.node, what, alive, clock.seconds());
        // The other ranks' nodes stop picking it as a partner.
        for (int o = 1; o < m.world.size(); ++o)
          if (o != r) send_small(WordMsg{kWordNodeFailed, s.node}, o, kWord);
      } else {
        going = l.after_step(s.node, s.loss, s.kind == kStepTaken, clock.seconds());
      }
      if (!going) break;  // the rest are steps past the stop: not counted
    }
    if (going) send_small(WordMsg{0, int32_t(steps.size())}, r, kSwAck);
  }
  const double end = clock.seconds();
  // No gather meanwhile: this loop takes any message.
  std::lock_guard<std::mutex> lk(m.mu);
  AbortUnlessDone guard(m.world);
  // Stop the nodes: each rank sends its counters, then `done` once its nodes
  // have ended; steps reported meanwhile are dropped.
  m.world.workers_stopped = true;
  for (int r = 1; r < m.world.size(); ++r) send_small(WordMsg{kWordStop, -1}, r, kWord);
  SwarmStats total = m.base;
  StopConfirmations stops(m.world.size());
  stops.start_wait();
  while (!stops.all()) {
    MPI_Message msg;
    MPI_Status st;
    if (!wait_message(MPI_ANY_SOURCE, &msg, &st, [&] { return stops.expired(); })) {
      // Reported like the PS's lost ranks; their nodes' state is gone, so no
      // gather follows (the summary takes the last average, the last
      // checkpoint stays the one to resume from) and the job ends unclean.
      for (int r : stops.missing()) {
        m.lose(r);
        const auto [first, last] = m.world.workers_of(r, m.nodes);
        l.rank_lost(r, first, last - 1, stops.why(), end);
      }
      break;
    }
    if (st.MPI_TAG == kSwStats) {
      total += nlohmann::json::parse(take_text(&msg, st)).get<SwarmStats>();
    } else if (drop(&msg, st) == kDone) {
      stops.confirm(st.MPI_SOURCE);
    }
  }
  if (m.lost.empty()) m.stats = total;  // else the last gather's counters: the lost ranks' are gone
  m.stopped = true;
  guard.done();
  return end;
}

void MpiSwarm::average(float* out, double* consensus) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lk(m.mu);
  AbortUnlessDone guard(m.world);
  const int R = m.world.size();
  std::vector<int> live;
  for (int r = 1; r < R; ++r)
    if (!m.is_lost(r)) send_small(WordMsg{0, -1}, r, kSwAverage);
  std::vector<double> sum(m.n, 0.0), part(m.n);
  SwarmStats total = m.base;
  int nodes = 0;
  for (int r = 1; r < R; ++r) {
    if (m.is_lost(r)) continue;
    const std::optional<std::string> text = gather_text(r, kSwSum);
    if (!text) {  // the mean of the nodes that answered
      m.lose(r);
      continue;
    }
    if (!receive_or_give_up(&part, r, kSwSumData, g_data, "sum")) {
      m.lose(r);
      part.assign(m.n, 0.0);  // the given-up receive keeps the old block
      continue;
    }
    const nlohmann::json counters = nlohmann::json::parse(*text);
    total += counters.get<SwarmStats>();
    for (size_t k = 0; k < m.n; ++k) sum[k] += part[k];
    nodes += counters.at("live_nodes").get<int>();
    live.push_back(r);
  }
  if (nodes == 0) {  // nobody answered: the previous average stands
    guard.done();
    return;
  }
  const double inv = 1.0 / double(nodes);
  for (size_t k = 0; k < m.n; ++k) out[k] = float(sum[k] * inv);
  const std::vector<float> mean(out, out + m.n);
  std::vector<int> sent;
  for (int r : live) {
    if (send_or_give_up(mean, r, kSwMeanData, g_data, "mean"))
      sent.push_back(r);
    else
      m.lose(r);
  }
  double c = 0;
  for (int r : sent) {
    std::vector<double> spread(1, 0.0);
    if (receive_or_give_up(&spread, r, kSwSpread, MPI_COMM_WORLD, "spread"))
      c += spread[0];
    else
      m.lose(r);
  }
  *consensus = c * inv;
  if (!m.stopped && m.lost.empty()) m.stats = total;  // after the stop, the counters the ranks sent then are whole
  guard.done();
}

SwarmStats MpiSwarm::stats() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->stats;
}

void MpiSwarm::release() {
  if (std::exchange(impl_->released, true)) return;
  for (int r = 1; r < impl_->world.size(); ++r)
    if (std::find(impl_->lost.begin(), impl_->lost.end(), r) == impl_->lost.end()) send_small(WordMsg{0, -1}, r, kFin);
}

const std::vector<int>& MpiSwarm::lost() const { return impl_->lost; }

}  // namespace adasync
