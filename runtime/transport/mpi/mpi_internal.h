// The MPI transport's own vocabulary, shared by its parameter-server side
// (mpi_ps.cc, mpi.cc) and its SwarmSGD side (mpi_swarm.cc, mpi_swarm_rank.cc): tags, messages, and the
// polling receive. Included by those files alone.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/stop_request.h"  // a stop signal shortens the end's waits

namespace adasync {
namespace mpi_detail {

enum Tag : int { kPush = 1, kFailed, kPull, kDraw, kCancelled, kDone, kStart = 20, kSnapshot, kSnapshotData, kWord, kFin,
                // SwarmSGD: a rank's nodes' steps (worker rank -> 0, StepMsg[]); a gather of the models (0 -> rank, the
                // rank's sum and counters back, the mean out, the rank's spread back); the counters at the stop
                kSwStep = 40, kSwAverage, kSwSum, kSwSpread, kSwStats,
                kSwAck,  // rank 0 has counted a rank's steps (WordMsg, worker: how many): more may follow
                kSwSave, kSwState,  // a checkpoint's gather: the rank's positions and counters back
                kSwFailedText };    // a failed node's error
// SwarmSGD arrays on g_data: the starting model, a rank's sum, the mean.
// A rank's nodes' state (model, published copy, distances: node after node).
enum SwarmData : int { kSwInit = 2000, kSwSumData, kSwMeanData, kSwStateData };
// A push's array travels on its worker's own tag, right after its header:
// a contiguous message, which MPI moves fastest (one copy where the ranks
// share memory with cross-memory attach).
constexpr int kPushData = 1000;
// Arrays (push and snapshot data) travel on their own communicator, so that
// the any-tag probes of the control loops never take one whose receive is
// not posted yet (a push whose header came while every slot was busy).
inline MPI_Comm g_data = MPI_COMM_NULL;
// SwarmSGD's exchanges between worker ranks (mpi_swarm_rank.cc) on theirs.
inline MPI_Comm g_swarm = MPI_COMM_NULL;
// The worker ranks on this host (null on rank 0): SwarmSGD's nodes share
// memory among them.
inline MPI_Comm g_host_workers = MPI_COMM_NULL;

// How long rank 0 waits on a worker rank at the end of a run (its stop
// confirmation, a gather's part) before it reports the rank lost. Live ranks
// answer within milliseconds. Once a stop signal has come the job may be going
// down (mpirun stops every rank when one dies, and SIGKILLs them 1 s after its
// SIGTERM by default): 0.3 s then, so the final checkpoint and the summary
// come first; a minute otherwise. The PS and SwarmSGD share it.
constexpr double kStopGraceSeconds = 0.3;
constexpr double kEndWaitSeconds = 60;
inline double end_wait_limit(bool stop_signalled) { return stop_signalled ? kStopGraceSeconds : kEndWaitSeconds; }
// How long a transfer under way (an array after its header) is waited for
// once its sender or receiver may be gone.
constexpr double kTransferWaitSeconds = 10;

inline std::chrono::steady_clock::time_point deadline_in(double seconds) {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

// Rank 0's record of the worker ranks' `done` after it told them to stop,
// shared by the parameter server's drain, SwarmSGD's stop and the world's
// stop_workers: which ranks confirmed, how long the wait lasts
// (end_wait_limit as of its start), and the ranks given up on, each reported
// with the same words.
class StopConfirmations {
 public:
  explicit StopConfirmations(int world_size) : confirmed_(size_t(world_size), 0) {}
  // Starts the wait (a stop signal shortens it to kStopGraceSeconds).
  void start_wait() {
    limit_ = end_wait_limit(stop_signal() != 0);
    deadline_ = deadline_in(limit_);
  }
  bool expired() const { return std::chrono::steady_clock::now() > deadline_; }
  std::chrono::steady_clock::time_point deadline() const { return deadline_; }
  void confirm(int rank) {
    if (rank > 0 && size_t(rank) < confirmed_.size() && !confirmed_[size_t(rank)])
      confirmed_[size_t(rank)] = 1, ++count_;
  }
  bool all() const { return count_ == int(confirmed_.size()) - 1; }
  std::vector<int> confirmed() const { return ranks(1); }
  std::vector<int> missing() const { return ranks(0); }
  // Why a missing rank is reported lost.
  std::string why() const {
    std::ostringstream s;
    s << "it did not confirm the stop within " << limit_ << " s (dead, or not answering)";
    return s.str();
  }

 private:
  std::vector<int> ranks(char confirmed) const {
    std::vector<int> r;
    for (size_t i = 1; i < confirmed_.size(); ++i)
      if (confirmed_[i] == confirmed) r.push_back(int(i));
    return r;
  }
  std::vector<char> confirmed_;  // by rank (0, rank 0's own, unused)
  int count_ = 0;
  double limit_ = kEndWaitSeconds;
  std::chrono::steady_clock::time_point deadline_ = deadline_in(kEndWaitSeconds);
};
// A node's step: taken, not taken (its gradient was not finite), or the
// node's worker failed (its error follows as text, kSwFailedText).
enum StepKind : int32_t { kStepTaken = 0, kStepNonfinite, kStepFailed };
struct StepMsg {
  int32_t node;
  float loss;
  int32_t kind;
};
enum WordKind : int32_t { kWordPull = 1, kWordContinue, kWordCancel, kWordStop, kWordNodeFailed };

struct PushHeader {
  int32_t worker;
  int32_t finite;
  int64_t tau;
  uint64_t batch;
  float loss;
  float unused;
};
struct FailedMsg {
  int32_t worker;
  char what[1020];
};
struct DrawMsg {
  int32_t worker;
  int32_t unused;
  double drawn;
  uint64_t position;
};
struct SnapHeader {
  int32_t worker;
  int32_t with_data;  // bit 0: the array follows; bit 1: it is the PS's word "pull now"
  int64_t version;
};
struct WordMsg {
  int32_t kind;
  int32_t worker;
};

inline void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw std::runtime_error(std::string("MPI: ") + what + ": " + std::string(msg, size_t(len)));
  }
}

template <class T>
inline void send_small(const T& m, int dest, int tag) {
  check(MPI_Send(&m, int(sizeof(T)), MPI_BYTE, dest, tag, MPI_COMM_WORLD), "send");
}

inline int message_bytes(const MPI_Status& st) {
  int bytes = 0;
  MPI_Get_count(&st, MPI_BYTE, &bytes);
  return bytes;
}

template <class T>
inline T receive_small(MPI_Message* msg, const MPI_Status& st, const char* what) {
  if (message_bytes(st) != int(sizeof(T)))
    throw std::runtime_error(std::string("MPI: malformed ") + what + " message from rank " +
                             std::to_string(st.MPI_SOURCE) + " (" + std::to_string(message_bytes(st)) + " bytes)");
  T m;
  check(MPI_Mrecv(&m, int(sizeof(T)), MPI_BYTE, msg, MPI_STATUS_IGNORE), what);
  return m;
}

// SwarmSGD's step reports go in batches at most this often: rank 0 and a
// worker rank's main thread, when it has no exchange to answer, sleep this
// long between polls. Waking per step (the mlp: about 1 ms) took their
// three threads 11% of 2 cores' time, against the nodes' 85%.
constexpr std::chrono::microseconds kSwarmPoll{1000};

// Polls for a message without spinning a core: ranks share cores with workers.
class Backoff {
 public:
  explicit Backoff(int max_sleep_us = 200) : max_sleep_us_(max_sleep_us) {}
  void idle() {
    if (++idle_ < 64) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::min(max_sleep_us_, 5 * (idle_ - 63))));
  }
  void reset() { idle_ = 0; }

 private:
  int max_sleep_us_;
  int idle_ = 0;
};

// A compute thread's wait on a transfer polls and sleeps between polls
// instead of spinning in MPI's progress loop: on shared cores a spinning
// waiter holds the core the rank that answers it needs (SwarmSGD's exchanges,
// the mlp on 2 cores: 0.72x -> 0.83x of one process). Not for the PS's
// pushes: rank 0 takes them at once, and sleeping there measured 0.66x -> 0.59x.
inline void between_polls(int polls) {
  if (polls < 8)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(20));
}
inline void idle_complete(MPI_Request* req, const char* what) {
  for (int polls = 0;; ++polls) {
    int flag = 0;
    check(MPI_Test(req, &flag, MPI_STATUS_IGNORE), what);
    if (flag) return;
    between_polls(polls);
  }
}

inline bool probe(int source, MPI_Message* msg, MPI_Status* st, int tag = MPI_ANY_TAG, MPI_Comm comm = MPI_COMM_WORLD) {
  int flag = 0;
  check(MPI_Improbe(source, tag, comm, &flag, msg, st), "probe");
  return flag != 0;
}

// Waits for the next message from `source` (polling, see Backoff); false
// once give_up() says so first.
template <class GiveUp>
bool wait_message(int source, MPI_Message* msg, MPI_Status* st, GiveUp give_up) {
  Backoff backoff;
  while (!probe(source, msg, st)) {
    if (give_up()) return false;
    backoff.idle();
  }
  return true;
}
inline bool wait_message(int source, MPI_Message* msg, MPI_Status* st) {
  return wait_message(source, msg, st, [] { return false; });
}

// Receives a message and throws it away; returns its tag. A push or a
// snapshot header takes its array with it (it follows on g_data; given up
// after kTransferWaitSeconds, when the sender is gone).
inline int drop(MPI_Message* msg, const MPI_Status& st) {
  std::vector<char> junk(size_t(std::max(0, message_bytes(st))));
  check(MPI_Mrecv(junk.data(), int(junk.size()), MPI_BYTE, msg, MPI_STATUS_IGNORE), "drop");
  int data_tag = -1;
  if (st.MPI_TAG == kPush && junk.size() == sizeof(PushHeader)) {
    PushHeader h;
    std::memcpy(&h, junk.data(), sizeof h);
    data_tag = kPushData + h.worker;
  } else if (st.MPI_TAG == kSnapshot && junk.size() == sizeof(SnapHeader)) {
    SnapHeader h;
    std::memcpy(&h, junk.data(), sizeof h);
    if (h.with_data & 1) data_tag = kSnapshotData;
  }
  if (data_tag >= 0) {
    const auto deadline = deadline_in(kTransferWaitSeconds);
    int flag = 0;
    MPI_Message dm;
    MPI_Status ds;
    while (!flag && std::chrono::steady_clock::now() < deadline) {
      check(MPI_Improbe(st.MPI_SOURCE, data_tag, g_data, &flag, &dm, &ds), "drop");
      if (!flag) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (flag) {
      junk.resize(size_t(std::max(0, message_bytes(ds))));
      check(MPI_Mrecv(junk.data(), int(junk.size()), MPI_BYTE, &dm, MPI_STATUS_IGNORE), "drop");
    }
  }
  return st.MPI_TAG;
}

// A text (JSON) message on MPI_COMM_WORLD; one already probed, received.
inline void send_text(const std::string& s, int dest, int tag) {
  check(MPI_Send(s.data(), int(s.size()), MPI_CHAR, dest, tag, MPI_COMM_WORLD), "send");
}
inline std::string take_text(MPI_Message* msg, const MPI_Status& st) {
  std::string text(size_t(message_bytes(st)), '\0');
  check(MPI_Mrecv(text.data(), int(text.size()), MPI_CHAR, msg, MPI_STATUS_IGNORE), "receive");
  return text;
}
inline std::string receive_text(int source, int tag) {
  MPI_Message msg;
  MPI_Status st;
  check(MPI_Mprobe(source, tag, MPI_COMM_WORLD, &msg, &st), "probe");
  return take_text(&msg, st);
}

// A worker rank's wait for rank 0's start (JSON, its "params" checked
// against this rank's model); null when rank 0 said stop first (this rank
// has then ended, see finish_worker_rank).
nlohmann::json await_start(size_t params);

// A worker rank's end: `done` to rank 0, then whatever rank 0 had in flight
// to this rank is received and dropped until its `fin`.
void finish_worker_rank();

}  // namespace mpi_detail
}  // namespace adasync
