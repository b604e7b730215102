// The seam between worker groups and the update loop. A worker pushes a
// gradient (or word that it failed) and waits for the parameter server's word
// (pull, continue, stop); the PS side takes pushes in arrival order and posts
// words, cancels and stops. In one process this is a message queue and one
// mailbox per worker; another transport (workers in other processes) drops in
// behind the same interface without touching the engine.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/drivers/worker.h"
#include "runtime/engine/aggregator.h"

namespace adasync {

// A gradient for the PS, or word that its worker failed.
struct Message {
  Push push;
  bool failed = false;
  std::string what;
};

// The workers' side: what worker_loop sees.
class WorkerChannel {
 public:
  virtual ~WorkerChannel() = default;
  virtual void send(Message m) = 0;
  virtual Next await(int w) = 0;             // blocks for the PS's word; Wait means stop
  virtual Next poll(int w, Next dflt) = 0;   // a pending word, or dflt (Wait once stopped)
  virtual bool stopped(int w) = 0;
  virtual const CancelSource& cancel_source(int w) = 0;
};

// The parameter server's side: what serve_updates sees.
class PsChannel {
 public:
  virtual ~PsChannel() = default;
  virtual bool receive(Message* m, double timeout_s) = 0;
  virtual void post(int w, Next n) = 0;  // Pull dominates Continue
  virtual void cancel(int w) = 0;
  virtual void stop_all() = 0;
  virtual std::deque<Message> drain() = 0;  // what is left once every worker has stopped
};

// Both sides in one process (and a worker rank's local end over MPI).
class InProcessTransport : public WorkerChannel, public PsChannel {
 public:
  explicit InProcessTransport(int workers);
  void send(Message m) override;
  Next await(int w) override;
  Next poll(int w, Next dflt) override;
  bool stopped(int w) override;
  const CancelSource& cancel_source(int w) override { return box_[size_t(w)]->cancel; }
  bool receive(Message* m, double timeout_s) override;
  void post(int w, Next n) override;
  void cancel(int w) override { box_[size_t(w)]->cancel.cancel(); }
  void stop_all() override;
  std::deque<Message> drain() override;

 private:
  struct Mailbox {
    std::mutex mu;
    std::condition_variable cv;
    Next pending = Next::Wait;  // Wait = nothing pending
    bool stop = false;
    CancelSource cancel;
  };
  std::vector<std::unique_ptr<Mailbox>> box_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> q_;
};

}  // namespace adasync
