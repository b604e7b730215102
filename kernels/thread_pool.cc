#include "kernels/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <climits>

namespace adasync {

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) {
  for (int i = 1; i < threads_; ++i) helpers_.emplace_back([this, i] { helper_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : helpers_) t.join();
}

int ThreadPool::chunks_for(size_t n, size_t grain) const {
  if (n == 0) return 0;
  size_t by_grain = (n + std::max<size_t>(grain, 1) - 1) / std::max<size_t>(grain, 1);
  return static_cast<int>(std::min<size_t>(by_grain, static_cast<size_t>(threads_)));
}

void ThreadPool::parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& f) {
  parallel_chunks(n, grain, [&f](int, size_t b, size_t e) { f(b, e); });
}

void ThreadPool::parallel_chunks(size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& f) {
  int chunks = chunks_for(n, grain);
  if (chunks == 0) return;
  if (chunks == 1) {
    f(0, 0, n);
    return;
  }
  std::lock_guard<std::mutex> call(call_mu_);
  run(chunks, n, 0, f);
}

void ThreadPool::parallel_pieces(size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& f) {
  if (n == 0) return;
  // At least one item a piece, and at most INT_MAX pieces.
  grain = std::max<size_t>({grain, 1, (n + INT_MAX - 1) / INT_MAX});
  const size_t pieces = (n + grain - 1) / grain;
  if (pieces == 1 || threads_ == 1) {
    f(0, 0, n);
    return;
  }
  std::lock_guard<std::mutex> call(call_mu_);
  run(int(pieces), n, grain, f);
}

size_t ThreadPool::job_begin(int c) const {
  if (job_piece_ != 0) return std::min(job_n_, size_t(c) * job_piece_);
  return chunk_begin(job_n_, job_chunks_, c);
}

void ThreadPool::run(int chunks, size_t n, size_t piece, const std::function<void(int, size_t, size_t)>& f) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &f;
    job_n_ = n;
    job_piece_ = piece;
    job_chunks_ = chunks;
    next_chunk_ = 0;
    pending_ = chunks;
    ++generation_;
  }
  start_cv_.notify_all();
  // The caller works too, taking chunks until none are left.
  for (;;) {
    int c;
    size_t b, e;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (next_chunk_ >= job_chunks_) break;
      c = next_chunk_++;
      b = job_begin(c), e = job_begin(c + 1);
    }
    f(piece != 0 ? 0 : c, b, e);
    std::lock_guard<std::mutex> lk(mu_);
    if (--pending_ == 0) done_cv_.notify_all();
  }
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [this] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::helper_loop(int id) {
  unsigned long seen = 0;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    if (!stop_ && generation_.load(std::memory_order_relaxed) == seen) {
      // 50 us of polling before blocking on the condition variable, timed
      // by the clock: a pause lasts 10 to 140 cycles by CPU, and a longer
      // spin takes a core from another pool (the parameter server's apply
      // runs between two compute steps).
      lk.unlock();
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      for (int spin = 1; generation_.load(std::memory_order_acquire) == seen; ++spin) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
        if (spin % 64 == 0 && std::chrono::steady_clock::now() >= until) break;
      }
      lk.lock();
    }
    start_cv_.wait(lk, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
    if (stop_) return;
    seen = generation_.load(std::memory_order_relaxed);
    while (job_ != nullptr && next_chunk_ < job_chunks_) {
      const int c = next_chunk_++;
      const auto* f = job_;
      const size_t b = job_begin(c), e = job_begin(c + 1);
      const int slot = job_piece_ != 0 ? id : c;
      lk.unlock();
      (*f)(slot, b, e);
      lk.lock();
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }
}

void parallel_for(ThreadPool* pool, size_t n, size_t grain, const std::function<void(size_t, size_t)>& f) {
  if (pool != nullptr && pool->size() > 1) {
    pool->parallel_for(n, grain, f);
  } else if (n > 0) {
    f(0, n);
  }
}

void parallel_pieces(ThreadPool* pool, size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& f) {
  if (pool != nullptr) pool->parallel_pieces(n, grain, f);
  else if (n > 0) f(0, 0, n);
}

}  // namespace adasync
