// ThreadPool: a fixed set of host threads for data-parallel loops.
//
// parallel_for(n, grain, f) splits [0, n) into contiguous chunks of at least
// `grain` items and calls f(begin, end) on them; the calling thread takes a
// share, so a pool of size T uses T-1 helper threads. Chunk boundaries depend
// only on (n, grain, size()), never on timing, so any reduction done per chunk
// and combined in chunk order is deterministic. One parallel_for at a time per
// pool (calls from several threads are serialised by a mutex). Idle helpers
// spin briefly before sleeping, so the back-to-back loops of a training step
// do not pay a thread wake-up each.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace adasync {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // Number of chunks parallel_for will use for n items; chunk i covers
  // [chunk_begin(n, chunks, i), chunk_begin(n, chunks, i + 1)).
  int chunks_for(size_t n, size_t grain) const;
  static size_t chunk_begin(size_t n, int chunks, int i) {
    return n * static_cast<size_t>(i) / static_cast<size_t>(chunks);
  }

  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& f);
  // Calls f(chunk_index, begin, end) for each chunk; chunk count from chunks_for.
  void parallel_chunks(size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& f);
  // Cuts [0, n) into pieces of `grain` items (the last may be shorter) that
  // the threads take as each comes free, and calls f(thread, begin, end) with
  // the running thread's index in [0, size()): for its scratch, never for a
  // reduction (which thread takes a piece depends on timing). A thread that
  // the machine slows or preempts holds up the loop by one piece, not by
  // half of it.
  void parallel_pieces(size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& f);

 private:
  void run(int chunks, size_t n, size_t piece, const std::function<void(int, size_t, size_t)>& f);
  // Bounds of chunk c of the current job: a chunk_begin share, or a piece.
  size_t job_begin(int c) const;
  void helper_loop(int id);

  int threads_;
  std::vector<std::thread> helpers_;
  std::mutex call_mu_;  // serialises callers
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int, size_t, size_t)>* job_ = nullptr;
  size_t job_n_ = 0;
  size_t job_piece_ = 0;  // nonzero: parallel_pieces (f gets the thread's index)
  int job_chunks_ = 0;
  int next_chunk_ = 0;
  int pending_ = 0;
  std::atomic<unsigned long> generation_{0};
  bool stop_ = false;
};

// Runs f over [0, n) on pool when it is non-null and has more than one thread,
// else serially on the caller.
void parallel_for(ThreadPool* pool, size_t n, size_t grain, const std::function<void(size_t, size_t)>& f);
// ThreadPool::parallel_pieces on pool when it is non-null, else f(0, 0, n).
void parallel_pieces(ThreadPool* pool, size_t n, size_t grain, const std::function<void(int, size_t, size_t)>& f);

}  // namespace adasync
