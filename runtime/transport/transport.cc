#include "runtime/transport/transport.h"

#include <chrono>
#include <utility>

namespace adasync {

InProcessTransport::InProcessTransport(int workers) {
  for (int w = 0; w < workers; ++w) box_.push_back(std::make_unique<Mailbox>());
}

void InProcessTransport::send(Message m) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    q_.push_back(std::move(m));
  }
  cv_.notify_one();
}

bool InProcessTransport::receive(Message* out, double timeout_s) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return !q_.empty(); })) return false;
  *out = std::move(q_.front());
  q_.pop_front();
  return true;
}

std::deque<Message> InProcessTransport::drain() {
  std::lock_guard<std::mutex> lk(mu_);
  return std::exchange(q_, {});
}

void InProcessTransport::post(int w, Next n) {
  Mailbox& b = *box_[size_t(w)];
  {
    std::lock_guard<std::mutex> lk(b.mu);
    if (n == Next::Pull || b.pending == Next::Wait) b.pending = n;
  }
  b.cv.notify_all();
}

void InProcessTransport::stop_all() {
  for (auto& b : box_) {
    {
      std::lock_guard<std::mutex> lk(b->mu);
      b->stop = true;
    }
    b->cv.notify_all();
    b->cancel.cancel();
  }
}

Next InProcessTransport::await(int w) {
  Mailbox& b = *box_[size_t(w)];
  std::unique_lock<std::mutex> lk(b.mu);
  b.cv.wait(lk, [&] { return b.stop || b.pending != Next::Wait; });
  if (b.stop) return Next::Wait;
  return std::exchange(b.pending, Next::Wait);
}

Next InProcessTransport::poll(int w, Next dflt) {
  Mailbox& b = *box_[size_t(w)];
  std::lock_guard<std::mutex> lk(b.mu);
  if (b.stop) return Next::Wait;
  if (b.pending == Next::Wait) return dflt;
  return std::exchange(b.pending, Next::Wait);
}

bool InProcessTransport::stopped(int w) {
  Mailbox& b = *box_[size_t(w)];
  std::lock_guard<std::mutex> lk(b.mu);
  return b.stop;
}

}  // namespace adasync
