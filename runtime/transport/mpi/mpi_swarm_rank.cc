// SwarmSGD over MPI, a worker rank's side: its nodes, their exchanges with
// the nodes of other ranks, and its answers to rank 0 (mpi_swarm.cc).
//
// An exchange between node i (rank A) and node j (rank B), on g_swarm:
//   A -> B  request   (kind, i, j) and, blocking, Q(x_i)
//   B -> A  nack      the blocks B could not decode (A sends them again at
//                     full precision); then, blocking, B averages x_j
//   B -> A  reply     Q(x_j) (blocking) or Q(p_j), j's published copy
//   A -> B  verdict   the blocks A could not decode (B sends them again);
//                     quantised only: full precision has nothing to fail
// At full precision nothing can fail to decode: the request is the header,
// then x_i as it is, and the reply x_j as it is (no message is built).
// B's main thread serves requests one at a time and never waits on a node
// lock held across a message, so two ranks exchanging with each other at once
// cannot wait on each other. Bytes are counted by the initiator, as transfer()
// counts them in one process (the verdict that names no block is free there).
//
// Ranks on one host skip the messages: their nodes' arrays and locks live in
// an MPI shared-memory window (SharedNodes), and an initiator averages with a
// partner of another rank in place, as in one process, without the partner's
// rank having to wake and answer. Ranks on other hosts exchange as above.
#include <mpi.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/algorithms/swarm.h"
#include "runtime/drivers/swarm_drivers.h"
#include "runtime/output.h"
#include "runtime/stop_request.h"  // the drain is short once the job is going down
#include "runtime/transport/mpi/mpi.h"
#include "runtime/transport/mpi/mpi_internal.h"
#include "runtime/transport/mpi/shared_nodes.h"
namespace adasync {
using namespace mpi_detail;
namespace {

constexpr int kSwRequest = 1;
// Each initiator's own two streams (it has one exchange at a time).
int reply_tag(int i) { return 16 + 2 * i; }
int resend_tag(int i) { return 17 + 2 * i; }
enum : int32_t { kBlocking = 1, kFetch = 2, kNack = 3, kReply = 4 };

struct RequestHeader {
  int32_t kind, i, j, unused;
};

using Bytes = std::vector<unsigned char>;

// The far side's (a rank's main thread) transfers block: it answers a node
// that waits for it (sleeping there too measured 0.85x -> 0.81x).
void send_bytes(const void* p, size_t n, int dest, int tag) {
  check(MPI_Send(p, int(n), MPI_BYTE, dest, tag, g_swarm), "swarm send");
}
// Into `b`, whose storage is kept from one exchange to the next: a model's
// bytes are not allocated, faulted in and zeroed again for every message.
void receive_into(int source, int tag, Bytes* b) {
  MPI_Message msg;
  MPI_Status st;
  check(MPI_Mprobe(source, tag, g_swarm, &msg, &st), "swarm probe");
  b->resize(size_t(message_bytes(st)));
  check(MPI_Mrecv(b->data(), int(b->size()), MPI_BYTE, &msg, MPI_STATUS_IGNORE), "swarm receive");
}
void send_idle(const void* p, size_t n, int dest, int tag) {
  MPI_Request req;
  check(MPI_Isend(p, int(n), MPI_BYTE, dest, tag, g_swarm, &req), "swarm send");
  idle_complete(&req, "swarm send");
}
void receive_idle(int source, int tag, Bytes* b) {
  MPI_Message msg;
  MPI_Status st;
  for (int polls = 0; !probe(source, &msg, &st, tag, g_swarm); ++polls) between_polls(polls);
  b->resize(size_t(message_bytes(st)));
  MPI_Request req;
  check(MPI_Imrecv(b->data(), int(b->size()), MPI_BYTE, &msg, &req), "swarm receive");
  idle_complete(&req, "swarm receive");
}
// A model at full precision, straight into `out` (n floats).
void receive_floats_idle(int source, int tag, float* out, size_t n) {
  MPI_Message msg;
  MPI_Status st;
  for (int polls = 0; !probe(source, &msg, &st, tag, g_swarm); ++polls) between_polls(polls);
  if (size_t(message_bytes(st)) != n * sizeof(float)) throw std::runtime_error("MPI: malformed SwarmSGD model");
  MPI_Request req;
  check(MPI_Imrecv(out, int(n * sizeof(float)), MPI_BYTE, &msg, &req), "swarm receive");
  idle_complete(&req, "swarm receive");
}
void receive_floats(int source, int tag, float* out, size_t n) {
  MPI_Message msg;
  MPI_Status st;
  check(MPI_Mprobe(source, tag, g_swarm, &msg, &st), "swarm probe");
  if (size_t(message_bytes(st)) != n * sizeof(float)) throw std::runtime_error("MPI: malformed SwarmSGD model");
  check(MPI_Mrecv(out, int(n * sizeof(float)), MPI_BYTE, &msg, MPI_STATUS_IGNORE), "swarm receive");
}
Bytes receive_bytes(int source, int tag) {
  Bytes b;
  receive_into(source, tag, &b);
  return b;
}
// A message of a kind word and a payload.
Bytes framed(int32_t kind, const void* p, size_t n) {
  Bytes b(sizeof kind + n);
  std::memcpy(b.data(), &kind, sizeof kind);
  if (n > 0) std::memcpy(b.data() + sizeof kind, p, n);
  return b;
}
int32_t kind_of(const Bytes& b) {
  if (b.size() < sizeof(int32_t)) throw std::runtime_error("MPI: malformed SwarmSGD message");
  int32_t k;
  std::memcpy(&k, b.data(), sizeof k);
  return k;
}

size_t count_failed(const Bytes& failed) {
  size_t bad = 0;
  for (unsigned char f : failed) bad += f != 0;
  return bad;
}

// Both ends of the exchanges of one worker rank.
class MpiSwarmPeers : public SwarmPeers {
 public:
  MpiSwarmPeers(MpiWorld& world, const SwarmCodec& codec, size_t n, int nodes)
      : world_(world), codec_(codec), n_(n), nodes_(nodes), nb_(codec.blocks(n)), scratch_(size_t(nodes)) {}
  void attach(SwarmEngine* eng) { eng_ = eng; }

  // ---- initiator (a node's thread)
  void exchange(int i, int j, const float* s, const float* bound, float* q, float* d, TransferCount* to_j,
                TransferCount* from_j) override {
    const int B = world_.rank_of(j, nodes_);
    if (codec_.exact()) {  // the header, then the model itself: no copy into a message on either side
      const RequestHeader h{kBlocking, i, j, 0};
      send_idle(&h, sizeof h, B, kSwRequest);
      send_idle(s, n_ * sizeof(float), B, resend_tag(i));
      receive_floats_idle(B, reply_tag(i), q, n_);
      *to_j = count_transfer(codec_, n_, nullptr, 0);
      *from_j = count_transfer(codec_, n_, nullptr, 0);
      return;
    }
    Bytes& req = scratch_[size_t(i)].req;  // node i's thread alone uses its scratch
    Bytes& m = scratch_[size_t(i)].reply;
    req.resize(sizeof(RequestHeader) + codec_.message_bytes(n_));
    const RequestHeader h{kBlocking, i, j, 0};
    std::memcpy(req.data(), &h, sizeof h);
    codec_.encode(s, n_, bound, req.data() + sizeof h);
    send_idle(req.data(), req.size(), B, kSwRequest);
    Bytes nack(nb_, 0);
    receive_idle(B, reply_tag(i), &m);
    if (kind_of(m) == kNack) {
      if (m.size() != sizeof(int32_t) + nb_) throw std::runtime_error("MPI: malformed SwarmSGD NACK");
      std::memcpy(nack.data(), m.data() + sizeof(int32_t), nb_);
      std::vector<float> packed(failed_values(codec_, nack.data(), n_));
      pack_failed(codec_, s, nack.data(), n_, packed.data());
      send_idle(packed.data(), packed.size() * sizeof(float), B, resend_tag(i));
      receive_idle(B, reply_tag(i), &m);
    }
    *to_j = count_transfer(codec_, n_, nack.data(), count_failed(nack));
    receive_reply(i, B, m, s, q, d, from_j);
  }

  void fetch(int i, int j, const float* b, float* q, float* d, TransferCount* from_j) override {
    const int B = world_.rank_of(j, nodes_);
    const RequestHeader h{kFetch, i, j, 0};
    send_idle(&h, sizeof h, B, kSwRequest);
    if (codec_.exact()) {
      receive_floats_idle(B, reply_tag(i), q, n_);
      *from_j = count_transfer(codec_, n_, nullptr, 0);
      return;
    }
    Bytes& m = scratch_[size_t(i)].reply;
    receive_idle(B, reply_tag(i), &m);
    receive_reply(i, B, m, b, q, d, from_j);
  }

  // ---- the far side (this rank's main thread): one request
  void serve(MPI_Message* msg, const MPI_Status& st) {
    Bytes& req = req_;
    req.resize(size_t(message_bytes(st)));
    check(MPI_Mrecv(req.data(), int(req.size()), MPI_BYTE, msg, MPI_STATUS_IGNORE), "swarm request");
    RequestHeader h;
    if (req.size() < sizeof h) throw std::runtime_error("MPI: malformed SwarmSGD request");
    std::memcpy(&h, req.data(), sizeof h);
    const int A = st.MPI_SOURCE, i = h.i, j = h.j;
    if (j < eng_->first() || j >= eng_->last() || i < 0 || i >= nodes_ || world_.rank_of(i, nodes_) != A)
      throw std::runtime_error("MPI: rank " + std::to_string(A) + " asked node " + std::to_string(j) +
                               " for an exchange with node " + std::to_string(i));
    x_.resize(n_);
    q_.resize(n_);
    bound_.assign(nb_, 0.f);
    if (codec_.exact()) {  // full precision: the model follows the header, x_j goes back as it is
      if (req.size() != sizeof h || (h.kind != kBlocking && h.kind != kFetch))
        throw std::runtime_error("MPI: malformed SwarmSGD request");
      if (h.kind == kBlocking) {
        receive_floats(A, resend_tag(i), q_.data(), n_);
        eng_->far_state(j, false, x_.data(), nullptr);
        eng_->far_average(j, x_.data(), q_.data(), bound_.data());
      } else {
        eng_->far_state(j, true, x_.data(), bound_.data());
      }
      send_bytes(x_.data(), n_ * sizeof(float), A, reply_tag(i));
      return;
    }
    if (h.kind == kBlocking) {
      if (req.size() != sizeof h + codec_.message_bytes(n_)) throw std::runtime_error("MPI: malformed SwarmSGD request");
      eng_->far_state(j, false, x_.data(), nullptr);
      const unsigned char* m1 = req.data() + sizeof h;
      Bytes failed(nb_, 0);
      if (codec_.decode(m1, x_.data(), n_, q_.data(), failed.data()) > 0) {
        const Bytes nack = framed(kNack, failed.data(), nb_);
        send_bytes(nack.data(), nack.size(), A, reply_tag(i));
        const Bytes packed = receive_bytes(A, resend_tag(i));
        if (packed.size() != failed_values(codec_, failed.data(), n_) * sizeof(float))
          throw std::runtime_error("MPI: malformed SwarmSGD resend");
        unpack_failed(codec_, reinterpret_cast<const float*>(packed.data()), failed.data(), n_, q_.data());
      }
      // j's bound is true: its reply is decoded unless a fixed step is too small.
      if (nb_ > 0) receiver_bounds(codec_, m1, failed.data(), q_.data(), x_.data(), n_, bound_.data());
      eng_->far_average(j, x_.data(), q_.data(), bound_.data());
    } else if (h.kind == kFetch) {
      eng_->far_state(j, true, x_.data(), bound_.data());
    } else {
      throw std::runtime_error("MPI: a SwarmSGD request of kind " + std::to_string(h.kind));
    }
    Bytes& reply = reply_;
    reply.resize(sizeof(int32_t) + codec_.message_bytes(n_));
    const int32_t k = kReply;
    std::memcpy(reply.data(), &k, sizeof k);
    codec_.encode(x_.data(), n_, bound_.data(), reply.data() + sizeof k);
    send_bytes(reply.data(), reply.size(), A, reply_tag(i));
    if (nb_ == 0) return;  // full precision: nothing can fail, no verdict comes
    const Bytes verdict = receive_bytes(A, resend_tag(i));
    if (verdict.size() != nb_) throw std::runtime_error("MPI: malformed SwarmSGD verdict");
    if (count_failed(verdict) > 0) {
      std::vector<float> packed(failed_values(codec_, verdict.data(), n_));
      pack_failed(codec_, x_.data(), verdict.data(), n_, packed.data());
      send_bytes(packed.data(), packed.size() * sizeof(float), A, reply_tag(i));
    }
  }

 private:
  // The partner's reply m, decoded relative to b, with the verdict and what it brings back.
  void receive_reply(int i, int B, const Bytes& m, const float* b, float* q, float* d, TransferCount* t) {
    if (kind_of(m) != kReply || m.size() != sizeof(int32_t) + codec_.message_bytes(n_))
      throw std::runtime_error("MPI: malformed SwarmSGD reply");
    const unsigned char* msg = m.data() + sizeof(int32_t);
    Bytes failed(nb_, 0);
    const size_t bad = codec_.decode(msg, b, n_, q, failed.data());
    // Full precision has no blocks to fail: no verdict, and the far side does not wait for one.
    if (nb_ > 0) send_idle(failed.data(), failed.size(), B, resend_tag(i));
    if (bad > 0) {
      Bytes packed;
      receive_idle(B, reply_tag(i), &packed);
      if (packed.size() != failed_values(codec_, failed.data(), n_) * sizeof(float))
        throw std::runtime_error("MPI: malformed SwarmSGD resend");
      unpack_failed(codec_, reinterpret_cast<const float*>(packed.data()), failed.data(), n_, q);
    }
    *t = count_transfer(codec_, n_, failed.data(), bad);
    if (nb_ > 0) receiver_bounds(codec_, msg, failed.data(), q, b, n_, d);
  }

  MpiWorld& world_;
  const SwarmCodec& codec_;
  size_t n_;
  int nodes_;
  size_t nb_;
  SwarmEngine* eng_ = nullptr;
  std::vector<float> x_, q_, bound_;  // the far side's scratch (main thread)
  Bytes req_, reply_;
  struct Scratch {
    Bytes req, reply;
  };
  std::vector<Scratch> scratch_;  // each initiating node's (its thread's)
};

// A worker rank's nodes report their steps to rank 0 through the rank's main
// thread, which sends what has queued since its last poll as one message:
// the messages and rank 0's wake-ups follow the polls, not the steps. A node
// runs at most `window` steps ahead of rank 0's acknowledged count, so nodes
// stop within a few steps of the limit.
class StepReporter : public SwarmListener {
 public:
  explicit StepReporter(int64_t window) : window_(window) {}
  bool on_time(double) override { return true; }
  bool after_step(int node, float loss, bool finite, double) override {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return unacked_ + int64_t(queue_.size()) < window_ || stopping_; });
    if (stopping_) return false;
    queue_.push_back(StepMsg{node, loss, finite ? kStepTaken : kStepNonfinite});
    return true;
  }
  // The node has left this rank's graph; rank 0 reports it, decides, and
  // tells the other ranks, whose nodes stop picking it. The rank's other
  // nodes go on.
  bool node_failed(int node, const std::string& what, int, double) override {
    std::lock_guard<std::mutex> lk(mu_);
    queue_.push_back(StepMsg{node, 0.f, kStepFailed});
    texts_.push_back(what);
    return true;
  }
  // The main thread: the queued steps as one message, each failure's text after it.
  void flush() {
    std::vector<StepMsg> batch;
    std::vector<std::string> texts;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (queue_.empty() || stopping_) return;
      batch.swap(queue_);
      texts.swap(texts_);
      unacked_ += int64_t(batch.size());
    }
    check(MPI_Send(batch.data(), int(batch.size() * sizeof(StepMsg)), MPI_BYTE, 0, kSwStep, MPI_COMM_WORLD), "steps");
    for (const std::string& t : texts) send_text(t, 0, kSwFailedText);
  }
  void acked(int64_t steps) {
    std::lock_guard<std::mutex> lk(mu_);
    unacked_ -= steps;
    cv_.notify_all();
  }
  void stop() {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t window_, unacked_ = 0;
  std::vector<StepMsg> queue_;
  std::vector<std::string> texts_;
  bool stopping_ = false;
};

[[noreturn]] void abort_job(MpiWorld& world, const std::exception& e) {
  std::fprintf(stderr, "trainer (rank %d on %s): error: %s; aborting the MPI job\n", world.rank(), world.host().c_str(),
               e.what());
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

}  // namespace

void serve_swarm_group(SwarmGroup& g, MpiWorld& world) {
  const size_t n = g.params;
  const int last = g.first + int(g.workers.size());
  const SwarmCodec codec(g.cfg->bits, g.cfg->quant_step, g.cfg->quant_block);
  const size_t per_node = 2 * n + codec.blocks(n);
  std::vector<float> init(n), resumed;
  std::vector<int> failed;  // nodes whose worker failed before a resume (of every rank)
  try {
    const nlohmann::json j = await_start(n);
    if (j.is_null()) return;  // stopped before any training
    const auto positions = j.at("positions").get<std::vector<uint64_t>>();
    failed = j.value("failed", std::vector<int>{});
    for (size_t i = 0; i < positions.size() && i < g.samplers->size(); ++i) (*g.samplers)[i].set_position(positions[i]);
    if (j.at("resume").get<bool>()) {
      resumed.resize(size_t(last - g.first) * per_node);
      check(MPI_Recv(resumed.data(), int(resumed.size() * sizeof(float)), MPI_BYTE, 0, kSwInit, g_data,
                     MPI_STATUS_IGNORE),
            "start");
    } else {
      check(MPI_Recv(init.data(), int(n * sizeof(float)), MPI_BYTE, 0, kSwInit, g_data, MPI_STATUS_IGNORE), "start");
    }
  } catch (const std::exception& e) {
    abort_job(world, e);  // rank 0 may be sending this rank its start
  }
  std::optional<SharedNodes> shared;  // outlives the engine whose nodes live in it
  if (g.shared_memory && g_host_workers != MPI_COMM_NULL) {
    try {
      shared.emplace(world, g.nodes, n, codec.blocks(n), g.first, last);
    } catch (const std::exception& e) {
      abort_job(world, e);
    }
  }
  // 16 steps a node: a step of 0.1 ms does not wait on rank 0's polls (kSwarmPoll at both ends).
  StepReporter reporter(16 * int64_t(g.workers.size()));  // outlives the nodes that call it
  MpiSwarmPeers peers(world, codec, n, g.nodes);
  SwarmEngine eng(*g.cfg, init.data(), n, g.nodes, g.first, last, &peers, shared ? &shared->nodes() : nullptr);
  SwarmThreads nodes(eng, SwarmSetup{g.workers, g.samplers, g.straggler, g.faults});
  peers.attach(&eng);
  for (int i = g.first; i < last && !resumed.empty(); ++i) {
    const float* s = resumed.data() + size_t(i - g.first) * per_node;
    eng.set_node_state(i, s, s + n, s + 2 * n);
  }
  for (int i : failed) eng.set_failed(i);  // this rank's nodes and the others' alike
  bool stopping = false, done = false;
  try {
    if (shared) shared->ready();
    nodes.start(reporter);
    // This thread answers the exchanges of nodes not in shared memory while
    // they wait: short sleeps when idle (the parameter server's 200 us cost
    // the mlp 0.83x -> 0.87x of one process). With every node in shared
    // memory none comes: it carries the step reports and rank 0's words, and
    // sleeps a poll period.
    bool answers = !shared;
    for (int j = 0; shared && j < g.nodes; ++j) answers = answers || shared->nodes()[size_t(j)].lock == nullptr;
    Backoff backoff(20);
    for (;;) {
      reporter.flush();
      MPI_Message msg;
      MPI_Status st;
      if (probe(MPI_ANY_SOURCE, &msg, &st, kSwRequest, g_swarm)) {
        backoff.reset();
        peers.serve(&msg, st);
        continue;
      }
      nodes.rethrow_error();  // a node's failed exchange or step ends the job, saying why
      if (stopping && !done && !nodes.running()) {
        // Every node has ended (none is in an exchange): the counters, then `done`.
        nodes.stop();
        send_text(nlohmann::json(eng.stats()).dump(), 0, kSwStats);
        send_small(WordMsg{0, -1}, 0, kDone);
        done = true;
      }
      if (!probe(0, &msg, &st)) {
        if (answers)
          backoff.idle();
        else
          std::this_thread::sleep_for(kSwarmPoll);
        continue;
      }
      backoff.reset();
      if (st.MPI_TAG == kWord) {
        const WordMsg wm = receive_small<WordMsg>(&msg, st, "word");
        if (wm.kind == kWordNodeFailed && wm.worker >= 0 && wm.worker < g.nodes) {
          eng.set_failed(wm.worker);  // another rank's node left: no partner of ours from now on
          continue;
        }
        if (wm.kind != kWordStop) throw std::runtime_error("MPI: a word other than stop or a failed node for SwarmSGD nodes");
        if (done) send_small(WordMsg{0, -1}, 0, kDone);  // asked again: rank 0 is ending the job
        stopping = true;
        nodes.request_stop();
        reporter.stop();
      } else if (st.MPI_TAG == kSwAverage) {
        receive_small<WordMsg>(&msg, st, "average");
        const std::vector<float> x = eng.copy_models();
        const size_t L = x.size() / n;
        std::vector<double> sum(n, 0.0);
        for (size_t i = 0; i < L; ++i)
          for (size_t k = 0; k < n; ++k) sum[k] += x[i * n + k];
        nlohmann::json counters = eng.stats();
        counters["live_nodes"] = L;  // those whose worker has not failed: the models summed
        send_text(counters.dump(), 0, kSwSum);
        check(MPI_Send(sum.data(), int(n * sizeof(double)), MPI_BYTE, 0, kSwSumData, g_data), "sum");
        std::vector<float> mean(n);
        check(MPI_Recv(mean.data(), int(n * sizeof(float)), MPI_BYTE, 0, kSwMeanData, g_data, MPI_STATUS_IGNORE),
              "mean");
        double spread = 0;
        for (size_t i = 0; i < L; ++i)
          for (size_t k = 0; k < n; ++k) {
            const double d = double(x[i * n + k]) - double(mean[k]);
            spread += d * d;
          }
        check(MPI_Send(&spread, 1, MPI_DOUBLE, 0, kSwSpread, MPI_COMM_WORLD), "spread");
      } else if (st.MPI_TAG == kSwSave) {
        receive_small<WordMsg>(&msg, st, "save");
        std::vector<float> state(size_t(last - g.first) * per_node);
        for (int i = g.first; i < last; ++i) {
          float* s = state.data() + size_t(i - g.first) * per_node;
          eng.node_state(i, s, s + n, s + 2 * n);
        }
        send_text(nlohmann::json{{"positions", eng.positions()}, {"stats", eng.stats()}}.dump(), 0,
                  kSwState);
        check(MPI_Send(state.data(), int(state.size() * sizeof(float)), MPI_BYTE, 0, kSwStateData, g_data), "state");
      } else if (st.MPI_TAG == kSwAck) {
        reporter.acked(receive_small<WordMsg>(&msg, st, "ack").worker);
      } else if (st.MPI_TAG == kFin) {
        receive_small<WordMsg>(&msg, st, "fin");
        break;
      } else {
        drop(&msg, st);
        throw std::runtime_error("MPI: unexpected tag " + std::to_string(st.MPI_TAG) + " from rank 0");
      }
    }
    nodes.stop();
    if (shared) shared->close();  // every rank of the host got here: none uses another's nodes now
  } catch (const std::exception& e) {
    abort_job(world, e);
  }
}

}  // namespace adasync
