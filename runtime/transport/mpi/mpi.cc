// The MPI transport's world (start-up, the rank layout, the stop handshake)
// and a worker rank's side of the parameter-server variants: its workers
// on in-process mailboxes, pushes to rank 0 (rank 0's side: mpi_ps.cc).
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
  const auto deadline = deadline_in(kEndWaitSeconds);
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
  MPI_Comm host = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &host);
  MPI_Comm_split(host, rank_ == 0 ? MPI_UNDEFINED : 0, rank_, &g_host_workers);
  MPI_Comm_free(&host);
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(name, &len);
  host_.assign(name, size_t(len));
  if (provided < MPI_THREAD_MULTIPLE)
    throw UsageError("MPI transport: the MPI library gives thread level " + std::to_string(provided) +
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
  if (g_host_workers != MPI_COMM_NULL) MPI_Comm_free(&g_host_workers);
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
  StopConfirmations stops(size_);
  stops.start_wait();
  MPI_Message msg;
  MPI_Status st;
  while (!stops.all() && wait_message(MPI_ANY_SOURCE, &msg, &st, [&] { return stops.expired(); }))
    if (drop(&msg, st) == kDone) stops.confirm(st.MPI_SOURCE);
  for (int r : stops.confirmed()) send_small(WordMsg{0, -1}, r, kFin);
  if (!stops.all()) unclean = true;  // MPI_Finalize would wait for them
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
