// A discrete-event queue: events in time order, ties broken by the order
// they were scheduled (a sequence number), so a seed fixes a whole run. The
// virtual driver and SwarmSGD's virtual clock share it; its sequence counter
// is part of their checkpointed state.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

namespace adasync {

template <class Payload>
class EventQueue {
 public:
  struct Event {
    double t;
    uint64_t seq;
    Payload what;
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  // Schedules `what` at time t; returns its sequence number.
  uint64_t push(double t, Payload what) {
    q_.push(Event{t, seq_, what});
    return seq_++;
  }
  // Re-inserts an event with its recorded sequence number (resume).
  void restore(double t, uint64_t seq, Payload what) { q_.push(Event{t, seq, what}); }
  bool empty() const { return q_.empty(); }
  Event pop() {
    Event e = q_.top();
    q_.pop();
    return e;
  }
  uint64_t seq() const { return seq_; }
  void set_seq(uint64_t s) { seq_ = s; }

 private:
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> q_;
  uint64_t seq_ = 0;
};

}  // namespace adasync
