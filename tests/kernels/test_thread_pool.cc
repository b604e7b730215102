// The pool's two ways of cutting a loop: fixed shares (parallel_for and
// parallel_chunks, whose boundaries reductions rely on) and pieces taken as
// threads come free (parallel_pieces).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/thread_pool.h"

namespace adasync {
namespace {

TEST(ThreadPool, PiecesCoverEveryItemOnceInPiecesOfTheGrainOnThreadsInRange) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    const size_t n = 1000, grain = 7;
    std::vector<std::atomic<int>> seen(n);
    std::atomic<int> bad_piece{0}, bad_thread{0};
    pool.parallel_pieces(n, grain, [&](int t, size_t b, size_t e) {
      if (t < 0 || t >= threads) ++bad_thread;
      if (b % grain != 0 || (e - b != grain && e != n)) ++bad_piece;
      for (size_t i = b; i < e; ++i) ++seen[i];
    });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "item " << i << ", " << threads << " threads";
    EXPECT_EQ(bad_piece.load(), 0);
    EXPECT_EQ(bad_thread.load(), 0);
  }
}

TEST(ThreadPool, AThreadHeldOnOnePieceDoesNotHoldTheRest) {
  // The piece with item 0 waits until every other piece is done: with fixed
  // halves the other half would wait behind it and the wait would time out.
  ThreadPool pool(2);
  const size_t n = 16;
  std::atomic<int> done{0};
  std::atomic<int> holder{-1};
  std::vector<int> by(n, -1);
  bool timed_out = false;
  pool.parallel_pieces(n, 1, [&](int t, size_t b, size_t e) {
    if (b == 0) {
      holder = t;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (done.load() < int(n) - 1 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      timed_out = done.load() < int(n) - 1;
      by[0] = t;
      return;
    }
    for (size_t i = b; i < e; ++i) by[i] = t;
    ++done;
  });
  EXPECT_FALSE(timed_out);
  for (size_t i = 1; i < n; ++i) EXPECT_NE(by[i], holder.load()) << "item " << i;
}

TEST(ThreadPool, ParallelForSharesDependOnTheCountsAlone) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.chunks_for(10, 4), 3);
  EXPECT_EQ(pool.chunks_for(10, 8), 2);
  EXPECT_EQ(pool.chunks_for(0, 1), 0);
  std::vector<std::pair<size_t, size_t>> got(3, {0, 0});
  pool.parallel_chunks(10, 1, [&](int c, size_t b, size_t e) { got[size_t(c)] = {b, e}; });
  for (int c = 0; c < 3; ++c)
    EXPECT_EQ(got[size_t(c)], std::make_pair(ThreadPool::chunk_begin(10, 3, c), ThreadPool::chunk_begin(10, 3, c + 1)));
}

}  // namespace
}  // namespace adasync
