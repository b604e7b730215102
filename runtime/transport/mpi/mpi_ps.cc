// The MPI transport's parameter-server side on rank 0: pushes received into
// the PS's slots, words and snapshots sent to the worker ranks, the stop and
// its drain (a worker rank's side, and the world, are in mpi.cc).
#include "runtime/transport/mpi/mpi.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/drivers/worker_loop.h"
#include "runtime/stop_request.h"
#include "runtime/transport/mpi/mpi_internal.h"
#include "runtime/transport/transport.h"
namespace adasync {
using namespace mpi_detail;
namespace {

// The parameter server's side on rank 0.
class MpiPsTransport : public PsChannel {
 public:
  MpiPsTransport(MpiWorld& world, UpdateLoop& loop, int P, std::vector<std::atomic<uint64_t>>* positions,
                 std::function<double()> clock)
      : world_(world),
        loop_(loop),
        ps_(loop.ps()),
        P_(P),
        positions_(positions),
        clock_(std::move(clock)),
        held_(size_t(P)),
        dead_(size_t(P), false),
        rank_version_(size_t(world.size()), -1),
        stops_(world.size()) {}
  ~MpiPsTransport() override {
    quit_ = true;
    if (comm_.joinable()) comm_.join();
  }

  void start() { comm_ = std::thread([this] { comm_main(); }); }

  bool receive(Message* out, double timeout_s) override {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return !q_.empty() || error_; }))
      return false;
    if (error_) std::rethrow_exception(error_);
    *out = std::move(q_.front());
    q_.pop_front();
    return true;
  }
  // Words go out through the receiving thread, the only sender to worker
  // ranks: they arrive in the order the PS gave them (a cancel before the
  // pull that follows it), and a pull carries its parameters.
  void post(int w, Next n) override { order({n == Next::Pull ? kWordPull : kWordContinue, w}); }
  void cancel(int w) override { order({kWordCancel, w}); }
  void stop_all() override {
    if (stop_sent_) return;
    stop_sent_ = true;
    world_.workers_stopped = true;
    order({kWordStop, -1});
  }
  // Worker ranks that did not confirm the stop (after drain), and why.
  const std::vector<int>& lost() const { return lost_; }
  std::string lost_why() const { return stops_.why(); }
  // Waits for every worker rank's `done` (pushes meanwhile are dropped).
  std::deque<Message> drain() override {
    std::unique_lock<std::mutex> lk(mu_);
    stops_.start_wait();
    const bool all = cv_.wait_until(lk, stops_.deadline(), [&] { return stops_.all() || error_; });
    if (!all && !error_) {
      lost_ = stops_.missing();  // the caller reports them (the progress line, the metrics, the summary)
      world_.unclean = true;
    }
    lk.unlock();
    quit_ = true;
    if (comm_.joinable()) comm_.join();
    lk.lock();
    return std::exchange(q_, {});
  }

 private:
  void comm_main() {
    name_this_thread("mpi-ps");
    Backoff backoff;
    try {
      while (!quit_) {
        send_jobs();
        complete_sends();
        post_receives();
        complete_receives();
        MPI_Message msg;
        MPI_Status st;
        if (!probe(MPI_ANY_SOURCE, &msg, &st)) {
          backoff.idle();
          continue;
        }
        backoff.reset();
        handle(msg, st);
      }
    } catch (const std::exception& e) {
      // The transport itself failed (an MPI error, a malformed message): no
      // rank can be stopped in order any more; one clear error and the job
      // ends (mpirun takes down every rank).
      std::fprintf(stderr, "trainer (rank 0): error: %s; aborting the MPI job\n", e.what());
      std::fflush(nullptr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (!finish_transfers()) world_.unclean = true;
  }

  // True when nothing was left under way.
  bool finish_transfers() {
    Backoff backoff;
    // Transfers still under way finish first (a rank may still be taking
    // the last snapshot it asked for; its buffer goes back to the pool when
    // this returns). Those with a rank that died never will: abandoned
    // after a while (leaked on purpose: MPI may still hold their buffers).
    const auto deadline = deadline_in(stop_signal() != 0 ? kStopGraceSeconds : kTransferWaitSeconds);
    while ((!outgoing_.empty() || !incoming_.empty()) && std::chrono::steady_clock::now() < deadline) {
      try {
        complete_sends();
        post_receives();
        complete_receives();
      } catch (...) {
        break;
      }
      backoff.idle();
    }
    const bool all = outgoing_.empty() && incoming_.empty();
    for (auto& o : outgoing_) (void)o.release();
    for (auto& in : incoming_) (void)in.release();
    return all;
  }

  void handle(MPI_Message& msg, const MPI_Status& st) {
    const int src = st.MPI_SOURCE;
    switch (st.MPI_TAG) {
      case kPush: {
        const PushHeader h = receive_small<PushHeader>(&msg, st, "push");
        const int w = h.worker;
        if (w < 0 || w >= P_ || world_.rank_of(w, P_) != src)
          throw std::runtime_error("MPI: rank " + std::to_string(src) + " pushed for worker " + std::to_string(w));
        // Its array is received without waiting (a rank that dies halfway
        // through a push must not stall the others'), into a slot as soon as
        // one is free (until then MPI holds it).
        auto in = std::make_unique<Incoming>();
        in->source = src;
        in->header = h;
        incoming_.push_back(std::move(in));
        post_receives();
        return;
      }
      case kFailed: {
        const FailedMsg f = receive_small<FailedMsg>(&msg, st, "failed");
        if (f.worker >= 0 && f.worker < P_) {
          dead_[size_t(f.worker)] = true;  // woken no more: nothing to send it or keep for it
          held_[size_t(f.worker)].clear();
        }
        Message m;
        m.failed = true;
        m.push.worker = f.worker;
        m.what = std::string(f.what, strnlen(f.what, sizeof f.what)) + " (rank " + std::to_string(src) + ")";
        enqueue(std::move(m));
        return;
      }
      case kPull: {
        const WordMsg p = receive_small<WordMsg>(&msg, st, "pull");
        if (p.worker < 0 || p.worker >= P_ || world_.rank_of(p.worker, P_) != src)
          throw std::runtime_error("MPI: rank " + std::to_string(src) + " pulled for worker " + std::to_string(p.worker));
        send_snapshot(p.worker, false);
        return;
      }
      case kDraw: {
        const DrawMsg d = receive_small<DrawMsg>(&msg, st, "draw");
        if (positions_ != nullptr && d.worker >= 0 && d.worker < P_)
          (*positions_)[size_t(d.worker)].store(d.position, std::memory_order_relaxed);
        loop_.drew(d.drawn);
        return;
      }
      case kCancelled:
        receive_small<WordMsg>(&msg, st, "cancelled");
        loop_.cancelled(1);
        return;
      case kDone: {
        receive_small<WordMsg>(&msg, st, "done");
        // The last message to that rank: it has sent its last (see finish_worker_rank).
        send_small(WordMsg{0, -1}, src, kFin);
        std::lock_guard<std::mutex> lk(mu_);
        stops_.confirm(src);
        cv_.notify_all();
        return;
      }
      default: {
        drop(&msg, st);
        throw std::runtime_error("MPI: unexpected message (tag " + std::to_string(st.MPI_TAG) + ") from rank " +
                                 std::to_string(src));
      }
    }
  }

  // Posts the receives of pushes whose headers have come, in order, while
  // slots are free (once the slots are closed: into scratch, to drop).
  void post_receives() {
    const size_t n = ps_.size();
    for (auto& in : incoming_) {
      if (in->posted) continue;
      bool closed = false;
      in->slot = ps_.try_acquire_slot(&closed);
      float* into = in->slot.data();
      if (!in->slot) {
        if (!closed) return;  // none free: the PS frees one when it applies
        in->scratch.resize(n);
        into = in->scratch.data();
      }
      check(MPI_Irecv(into, int(n * sizeof(float)), MPI_BYTE, in->source, kPushData + in->header.worker,
                      g_data, &in->request),
            "push");
      in->posted = true;
    }
  }

  // Pushes received in full go to the queue, in the order they arrived (one
  // that never completes, from a rank that died, holds up no other).
  void complete_receives() {
    std::vector<bool> waiting(size_t(P_), false);  // a worker's earlier push is still under way
    for (size_t i = 0; i < incoming_.size();) {
      const int w = incoming_[i]->header.worker;
      int done = 0;
      if (!waiting[size_t(w)] && incoming_[i]->posted)
        check(MPI_Test(&incoming_[i]->request, &done, MPI_STATUS_IGNORE), "push");
      if (!done) {
        waiting[size_t(w)] = true;  // its later pushes wait: one worker's pushes go in order
        ++i;
        continue;
      }
      std::unique_ptr<Incoming> p = std::move(incoming_[i]);
      incoming_.erase(incoming_.begin() + std::ptrdiff_t(i));
      if (!p->slot) continue;
      const PushHeader& h = p->header;
      SnapshotPtr params;
      auto& held = held_[size_t(w)];
      for (const SnapshotPtr& s : held)
        if (s->version == h.tau) params = s;
      while (!held.empty() && held.front()->version < h.tau) held.pop_front();
      if (!params)
        throw std::runtime_error("MPI: worker " + std::to_string(w) + " pushed a gradient of version " +
                                 std::to_string(h.tau) + ", not of a version it pulled");
      Message m;
      m.push.worker = w;
      m.push.tau = h.tau;
      m.push.batch = h.batch;
      m.push.loss = h.loss;
      m.push.finite = h.finite != 0;
      m.push.slot = std::move(p->slot);
      m.push.params = std::move(params);
      m.push.time = clock_();
      enqueue(std::move(m));
    }
  }

  void order(WordMsg m) {
    std::lock_guard<std::mutex> lk(jobs_mu_);
    jobs_.push_back(m);
  }

  void send_jobs() {
    std::vector<WordMsg> jobs;
    {
      std::lock_guard<std::mutex> lk(jobs_mu_);
      jobs.swap(jobs_);
    }
    for (const WordMsg& j : jobs) {
      if (j.kind == kWordStop) {
        for (int r = 1; r < world_.size(); ++r) send_small(j, r, kWord);
      } else if (j.kind == kWordPull) {
        if (!dead_[size_t(j.worker)]) send_snapshot(j.worker, true);
      } else {
        send_small(j, world_.rank_of(j.worker, P_), kWord);
      }
    }
  }

  // Worker w's parameters: the latest version, its array only when w's rank
  // does not hold it yet. `word`: also "pull now" (else: a reply to w's own pull).
  void send_snapshot(int w, bool word) {
    const int dest = world_.rank_of(w, P_);
    SnapshotPtr s = ps_.latest();
    // Sent without waiting for the receiver: a rank that stops answering
    // must not stall the pushes of the others.
    auto out = std::make_unique<Outgoing>();
    const bool with_data = rank_version_[size_t(dest)] != s->version;
    out->header = SnapHeader{w, (with_data ? 1 : 0) | (word ? 2 : 0), s->version};
    check(MPI_Isend(&out->header, int(sizeof out->header), MPI_BYTE, dest, kSnapshot, MPI_COMM_WORLD,
                    &out->requests[0]),
          "snapshot");
    if (with_data) {
      out->keep = s;
      check(MPI_Isend(s->data, int(s->size * sizeof(float)), MPI_BYTE, dest, kSnapshotData, g_data,
                      &out->requests[1]),
            "snapshot");
      rank_version_[size_t(dest)] = s->version;
    }
    outgoing_.push_back(std::move(out));
    // Every version sent to w stays at hand until w pushes a gradient of it
    // or of a later one (w may compute on any of them: a k-batch worker pulls
    // again before its push is fully received, a busy worker is sent several).
    held_[size_t(w)].push_back(std::move(s));
  }

  void complete_sends() {
    for (size_t i = 0; i < outgoing_.size();) {
      int done = 0;
      check(MPI_Testall(2, outgoing_[i]->requests, &done, MPI_STATUSES_IGNORE), "snapshot");
      if (done) {
        outgoing_[i] = std::move(outgoing_.back());
        outgoing_.pop_back();
      } else {
        ++i;
      }
    }
  }

  void enqueue(Message m) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(m));
    }
    cv_.notify_one();
  }

  MpiWorld& world_;
  UpdateLoop& loop_;
  ParamServer& ps_;
  const int P_;
  std::vector<std::atomic<uint64_t>>* positions_;
  std::function<double()> clock_;
  // Comm thread only.
  struct Outgoing {  // a snapshot on its way (its header and buffer live until sent)
    SnapHeader header{};
    SnapshotPtr keep;
    MPI_Request requests[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  };
  std::vector<std::unique_ptr<Outgoing>> outgoing_;
  struct Incoming {  // a push being received
    int source = 0;
    PushHeader header{};
    SlotLease slot;
    std::vector<float> scratch;
    bool posted = false;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::vector<std::unique_ptr<Incoming>> incoming_;
  std::vector<std::deque<SnapshotPtr>> held_;  // the snapshots each worker last pulled
  std::vector<bool> dead_;                      // workers that failed
  std::vector<int64_t> rank_version_;    // the version each rank holds
  std::thread comm_;
  std::atomic<bool> quit_{false};
  bool stop_sent_ = false;  // PS thread only
  std::mutex jobs_mu_;
  std::vector<WordMsg> jobs_;  // words for the receiving thread to send
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> q_;
  StopConfirmations stops_;  // the worker ranks' `done`
  std::vector<int> lost_;    // by drain: ranks whose `done` never came
  std::exception_ptr error_;
};

}  // namespace

double run_mpi_ps(DriverSetup& s, MpiWorld& world, const std::vector<uint64_t>& positions) {
  UpdateLoop& loop = *s.loop;
  ParamServer& ps = loop.ps();
  const int P = loop.aggregator().workers();
  WallTimer wall;
  const double offset = s.time_offset;
  std::function<double()> clock = [&] { return offset + wall.seconds(); };
  if (ps.size() * sizeof(float) >= size_t(INT_MAX))
    throw UsageError("MPI transport: the model's " + std::to_string(ps.size()) +
                     " parameters are over one MPI message's 2 GB");
  const std::string start = nlohmann::json{{"params", ps.size()}, {"positions", positions}}.dump();
  for (int r = 1; r < world.size(); ++r)
    send_text(start, r, kStart);
  MpiPsTransport net(world, loop, P, s.positions, clock);
  net.start();
  for (int w = 0; w < P; ++w) net.post(w, Next::Pull);
  name_this_thread("ps");
  double now = 0;
  try {
    now = serve_updates(loop, *s.hooks, net, clock);
  } catch (...) {
    net.stop_all();
    ps.close_slots();
    net.drain();
    ps.open_slots();
    throw;
  }
  net.stop_all();
  ps.close_slots();  // a push arriving now is received and dropped
  net.drain();
  ps.open_slots();
  for (int r : net.lost()) {
    const auto [first, last] = world.workers_of(r, P);
    loop.rank_lost(r, first, last - 1, net.lost_why(), now);
  }
  return now;
}

}  // namespace adasync
