#include "runtime/drivers/mpi.h"

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
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/drivers/mpi_internal.h"
#include "runtime/drivers/transport.h"
#include "runtime/drivers/worker_loop.h"
#include "runtime/supervisor.h"

namespace adasync {
using namespace mpi_detail;
namespace {

// The parameter server's side on rank 0.
class MpiPsTransport : public Transport {
 public:
  MpiPsTransport(MpiWorld& world, UpdateLoop& loop, int P, std::vector<std::atomic<uint64_t>>* positions,
                 std::function<double()> clock)
      : world_(world), loop_(loop), ps_(loop.ps()), P_(P), positions_(positions), clock_(std::move(clock)),
        held_(size_t(P)), dead_(size_t(P), false), rank_version_(size_t(world.size()), -1),
        confirmed_(size_t(world.size()), false) {}
  ~MpiPsTransport() override {
    quit_ = true;
    if (comm_.joinable()) comm_.join();
  }

  void start() { comm_ = std::thread([this] { comm_main(); }); }

  // Worker side: lives on the other ranks.
  void send(Message) override { throw std::logic_error("MpiPsTransport::send"); }
  Next await(int) override { throw std::logic_error("MpiPsTransport::await"); }
  Next poll(int, Next) override { throw std::logic_error("MpiPsTransport::poll"); }
  bool stopped(int) override { return stop_sent_; }
  const CancelSource& cancel_source(int) override { throw std::logic_error("MpiPsTransport::cancel_source"); }

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
  // Worker ranks that did not confirm the stop (after drain), and the wait.
  const std::vector<int>& lost() const { return lost_; }
  double drain_limit() const { return drain_limit_; }
  // Waits for every worker rank's `done` (pushes meanwhile are dropped).
  std::deque<Message> drain() override {
    // Live ranks answer within milliseconds. After a signal the job may be
    // going down (mpirun kills every rank once one dies, and SIGKILLs them 1 s
    // after its SIGTERM by default): the final checkpoint comes first.
    const double limit = stop_signal() != 0 ? 0.3 : 60;
    std::unique_lock<std::mutex> lk(mu_);
    const bool all = cv_.wait_for(lk, std::chrono::duration<double>(limit),
                                  [&] { return done_ == world_.worker_ranks() || error_; });
    if (!all && !error_) {
      // The caller reports them (the progress line, the metrics, the summary).
      for (int r = 1; r < world_.size(); ++r)
        if (!confirmed_[size_t(r)]) lost_.push_back(r);
      drain_limit_ = limit;
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
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(stop_signal() != 0 ? 300 : 10000);
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
        ++done_;
        confirmed_[size_t(src)] = true;
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
  int done_ = 0;
  std::vector<bool> confirmed_;  // by rank: its `done` came
  std::vector<int> lost_;        // by drain: ranks whose `done` never came
  double drain_limit_ = 0;
  std::exception_ptr error_;
};

// A worker rank's transport: words arrive through the rank's receiving
// thread into in-process mailboxes; pushes go to rank 0.
class MpiWorkerTransport : public InProcessTransport {
 public:
  explicit MpiWorkerTransport(int P) : InProcessTransport(P) {}
  void send(Message m) override {
    if (m.failed) {
      FailedMsg f{};
      f.worker = m.push.worker;
      std::strncpy(f.what, m.what.c_str(), sizeof f.what - 1);
      send_small(f, 0, kFailed);
      return;
    }
    const PushHeader h{m.push.worker, m.push.finite ? 1 : 0, m.push.tau, m.push.batch, m.push.loss, 0};
    send_small(h, 0, kPush);
    check(MPI_Send(m.push.slot.data(), int(m.push.params->size * sizeof(float)), MPI_BYTE, 0, kPushData + h.worker,
                   g_data),
          "push");
  }  // the slot goes back here
};

}  // namespace

// A worker rank's end: `done` to rank 0, then whatever rank 0 had in flight
// to this rank is received and dropped until its `fin` (a snapshot it is
// sending now would otherwise wait forever for its receive).
void mpi_detail::finish_worker_rank() {
  send_small(WordMsg{0, -1}, 0, kDone);
  // Rank 0 answers at once unless it has given up on this rank (it then ends the job).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  MPI_Message msg;
  MPI_Status st;
  while (wait_message(0, &msg, &st, [&] { return std::chrono::steady_clock::now() > deadline; }))
    if (drop(&msg, st) == kFin) return;
}


nlohmann::json mpi_detail::await_start(size_t params) {
  MPI_Message msg;
  MPI_Status st;
  wait_message(0, &msg, &st);
  if (st.MPI_TAG == kWord) {
    const WordMsg wm = receive_small<WordMsg>(&msg, st, "word");
    if (wm.kind != kWordStop) throw std::runtime_error("MPI: a word before the start");
    finish_worker_rank();
    return nullptr;
  }
  if (st.MPI_TAG != kStart) throw std::runtime_error("MPI: expected the start, found tag " + std::to_string(st.MPI_TAG));
  nlohmann::json j = nlohmann::json::parse(take_text(&msg, st));
  if (j.at("params").get<size_t>() != params)
    throw std::runtime_error("MPI: rank 0's model has " + std::to_string(j.at("params").get<size_t>()) +
                             " parameters, this rank's " + std::to_string(params));
  return j;
}

bool MpiWorld::available() { return true; }

MpiWorld::MpiWorld() {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_dup(MPI_COMM_WORLD, &g_data);  // takes the error handler with it
  MPI_Comm_dup(MPI_COMM_WORLD, &g_swarm);
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  host_.assign(name, size_t(len));
  if (provided < MPI_THREAD_MULTIPLE)
    throw UsageError("--transport mpi: the MPI library gives thread level " + std::to_string(provided) +
                     ", expected MPI_THREAD_MULTIPLE (" + std::to_string(MPI_THREAD_MULTIPLE) + ")");
}

MpiWorld::~MpiWorld() {
  if (unclean) {
    // A rank never confirmed the stop, or a transfer with one was abandoned:
    // MPI_Finalize could wait for it, or touch buffers already freed.
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  if (g_data != MPI_COMM_NULL) MPI_Comm_free(&g_data);
  if (g_swarm != MPI_COMM_NULL) MPI_Comm_free(&g_swarm);
  MPI_Finalize();
}

std::pair<int, int> MpiWorld::workers_of(int r, int P) const {
  const int R = worker_ranks();
  return {int(int64_t(r - 1) * P / R), int(int64_t(r) * P / R)};
}

int MpiWorld::rank_of(int w, int P) const {
  const int R = worker_ranks();
  // The r with workers_of(r).first <= w < workers_of(r).second.
  int r = int((int64_t(w) * R) / P) + 1;
  while (r > 1 && workers_of(r, P).first > w) --r;
  while (r < R && workers_of(r, P).second <= w) ++r;
  return r;
}

bool MpiWorld::agree(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  check(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "agree");
  return all == 1;
}

std::vector<int> MpiWorld::ranks_differing(const std::string& s) {
  int len = int(s.size());
  std::vector<int> lens(static_cast<size_t>(size_));
  check(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "gather");
  std::vector<int> displs(size_t(size_), 0);
  std::string all;
  if (rank_ == 0) {
    for (int r = 1; r < size_; ++r) displs[size_t(r)] = displs[size_t(r - 1)] + lens[size_t(r - 1)];
    all.resize(size_t(displs.back() + lens.back()));
  }
  check(MPI_Gatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD),
        "gatherv");
  std::vector<int> differ;
  if (rank_ == 0)
    for (int r = 1; r < size_; ++r)
      if (all.compare(size_t(displs[size_t(r)]), size_t(lens[size_t(r)]), s) != 0) differ.push_back(r);
  return differ;
}

void MpiWorld::stop_workers() {
  if (rank_ != 0 || workers_stopped) return;
  workers_stopped = true;
  for (int r = 1; r < size_; ++r) send_small(WordMsg{kWordStop, -1}, r, kWord);
  // Their `done`, and anything they sent before it. `fin` goes out once all
  // are done: SwarmSGD ranks serve each other's exchanges until then.
  std::vector<int> done;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  MPI_Message msg;
  MPI_Status st;
  while (int(done.size()) < worker_ranks() &&
         wait_message(MPI_ANY_SOURCE, &msg, &st, [&] { return std::chrono::steady_clock::now() > deadline; }))
    if (drop(&msg, st) == kDone) done.push_back(st.MPI_SOURCE);
  for (int r : done) send_small(WordMsg{0, -1}, r, kFin);
  if (int(done.size()) < worker_ranks()) unclean = true;  // MPI_Finalize would wait for them
}

double run_mpi_ps(DriverSetup& s, MpiWorld& world, const std::vector<uint64_t>& positions) {
  UpdateLoop& loop = *s.loop;
  ParamServer& ps = loop.ps();
  const int P = loop.aggregator().workers();
  WallTimer wall;
  const double offset = s.time_offset;
  std::function<double()> clock = [&] { return offset + wall.seconds(); };
  if (ps.size() * sizeof(float) >= size_t(INT_MAX))
    throw UsageError("--transport mpi: the model's " + std::to_string(ps.size()) +
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
  std::ostringstream why;
  why << "it did not confirm the stop within " << net.drain_limit() << " s (dead, or not answering)";
  for (int r : net.lost()) {
    const auto [first, last] = world.workers_of(r, P);
    loop.rank_lost(r, first, last - 1, why.str(), now);
  }
  return now;
}

void serve_worker_group(WorkerGroup& g, MpiWorld& world) {
  const int L = int(g.workers.size());
  const int P = g.first + L;  // mailboxes indexed by global id
  const nlohmann::json start = await_start(g.params);
  if (start.is_null()) return;  // stopped before any training
  const auto positions = start.at("positions").get<std::vector<uint64_t>>();
  for (int i = 0; i < L; ++i)
    if (size_t(g.first + i) < positions.size()) (*g.samplers)[size_t(i)].set_position(positions[size_t(g.first + i)]);

  MpiWorkerTransport net(P);
  struct PullBox {
    std::mutex mu;
    std::condition_variable cv;
    SnapshotPtr got;
    bool ready = false;
  };
  std::vector<std::unique_ptr<PullBox>> boxes;
  for (int i = 0; i < L; ++i) boxes.push_back(std::make_unique<PullBox>());
  std::atomic<bool> stopping{false};
  WallTimer wall;
  WorkerLink link;
  link.net = &net;
  link.slots = g.local;
  link.pull = [&](int w) -> SnapshotPtr {
    PullBox& b = *boxes[size_t(w - g.first)];
    {
      // Parameters that came with the PS's word; otherwise (k-batch workers
      // pulling on their own) ask for the latest.
      std::lock_guard<std::mutex> lk(b.mu);
      if (b.ready) {
        b.ready = false;
        return std::exchange(b.got, nullptr);
      }
    }
    send_small(WordMsg{0, w}, 0, kPull);
    std::unique_lock<std::mutex> lk(b.mu);
    b.cv.wait(lk, [&] { return b.ready || stopping.load(); });
    if (!b.ready) return nullptr;  // stopping
    b.ready = false;
    return std::exchange(b.got, nullptr);
  };
  link.drew = [](int w, double x, uint64_t position) { send_small(DrawMsg{w, 0, x, position}, 0, kDraw); };
  link.cancelled = [](int w) { send_small(WordMsg{0, w}, 0, kCancelled); };
  link.clock = [&wall] { return wall.seconds(); };
  link.variant = g.variant;
  link.straggler = g.straggler;
  link.faults = g.faults;

  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < L; ++i)
    threads.emplace_back([&, i] {
      const int w = g.first + i;
      name_this_thread("w" + std::to_string(w));
      worker_loop(w, *g.workers[size_t(i)], (*g.samplers)[size_t(i)], link);
      ++finished;
    });

  // Stops the workers. Meanwhile rank 0 may still be sending this rank a
  // snapshot, and a worker may be sending rank 0 a push that rank 0 receives
  // only once that send is done: so this thread goes on receiving (and
  // dropping) until every worker has returned.
  auto stop_local = [&] {
    stopping = true;
    net.stop_all();
    g.local->close_slots();
    for (auto& b : boxes) {
      std::lock_guard<std::mutex> lk(b->mu);
      b->cv.notify_all();
    }
    MPI_Message msg;
    MPI_Status st;
    while (finished.load() < L)
      if (wait_message(0, &msg, &st, [&] { return finished.load() >= L; })) drop(&msg, st);
  };
  SnapshotPtr latest;  // the version this rank holds
  try {
    for (bool running = true; running;) {
      MPI_Message msg;
      MPI_Status st;
      wait_message(0, &msg, &st);
      if (st.MPI_TAG == kWord) {
        const WordMsg wm = receive_small<WordMsg>(&msg, st, "word");
        if (wm.kind == kWordStop) {
          running = false;
        } else if (wm.worker < g.first || wm.worker >= P) {
          throw std::runtime_error("MPI: a word for worker " + std::to_string(wm.worker) + ", not on this rank");
        } else if (wm.kind == kWordCancel) {
          net.cancel(wm.worker);
        } else {
          net.post(wm.worker, wm.kind == kWordPull ? Next::Pull : Next::Continue);
        }
      } else if (st.MPI_TAG == kSnapshot) {
        const SnapHeader h = receive_small<SnapHeader>(&msg, st, "snapshot");
        if (h.with_data & 1) {
          // Its parameters follow at once, straight into a fresh buffer.
          latest = g.local->make_snapshot([&](float* buf) {
            check(MPI_Recv(buf, int(g.params * sizeof(float)), MPI_BYTE, 0, kSnapshotData, g_data,
                           MPI_STATUS_IGNORE),
                  "snapshot");
            return h.version;
          });
        } else if (!latest || latest->version != h.version) {
          throw std::runtime_error("MPI: rank 0 referred to version " + std::to_string(h.version) +
                                   ", which this rank does not hold");
        }
        if (h.worker < g.first || h.worker >= P) throw std::runtime_error("MPI: a snapshot for a worker not on this rank");
        PullBox& b = *boxes[size_t(h.worker - g.first)];
        {
          std::lock_guard<std::mutex> lk(b.mu);
          b.got = latest;
          b.ready = true;
        }
        b.cv.notify_all();
        if (h.with_data & 2) net.post(h.worker, Next::Pull);  // the PS's word came with the parameters
      } else {
        throw std::runtime_error("MPI: unexpected tag " + std::to_string(st.MPI_TAG) + " from rank 0");
      }
    }
  } catch (const std::exception& e) {
    // This rank can no longer take rank 0's words: one clear error, and the job ends.
    std::fprintf(stderr, "trainer (rank %d on %s): error: %s; aborting the MPI job\n", world.rank(),
                 world.host().c_str(), e.what());
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  stop_local();
  for (auto& t : threads) t.join();
  finish_worker_rank();
}

}  // namespace adasync
