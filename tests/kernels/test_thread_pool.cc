// The pool's two ways of cutting a loop: fixed shares (parallel_for and
// parallel_chunks, whose boundaries reductions rely on) and pieces taken as
// threads come free (parallel_pieces). And ThreadSanitizer's view of the
// products the pool's threads compute.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/simd.h"
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

// Under ThreadSanitizer the GEMM tiles are not instrumented and gemm_panel
// reports what it reads and writes as ranges (simd_kernels.inc): a product
// racing a write to its input, in a child process, must be named there.
TEST(RaceChecks, AProductRacingAWriteIsReportedUnderThreadSanitizer) {
#if !defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "needs a ThreadSanitizer build (-DADASYNC_SANITIZE=thread)";
#else
  const auto& kern = cpu::simd::kernels();
  if (kern.gemm_panel == nullptr) GTEST_SKIP() << "no SIMD GEMM on this CPU path (OpenBLAS's)";
  if (std::getenv("ADASYNC_RACE_CHILD") != nullptr) {  // the child: the race
    std::vector<float> a(32 * 64, 1.f), b(64 * 32, 1.f), c(32 * 32);
    const cpu::simd::GemmPanel p{0, 32, 0, 32, 64, 64, a.data(), 64, 1, b.data(), 32, c.data(), 32, false};
    std::thread writer([&] { a[100] = 2.f; });  // unordered with the product's reads
    kern.gemm_panel(p);
    writer.join();
    return;
  }
  const std::string cmd = "ADASYNC_RACE_CHILD=1 TSAN_OPTIONS=halt_on_error=0 '" +
                          std::filesystem::read_symlink("/proc/self/exe").string() +
                          "' --gtest_filter=RaceChecks.AProductRacingAWriteIsReportedUnderThreadSanitizer 2>&1";
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[4096];
  for (size_t got; (got = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, got);
  const int status = pclose(f);
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find("WARNING: ThreadSanitizer: data race"), std::string::npos) << out;
  EXPECT_NE(out.find("gemm_panel"), std::string::npos) << "the race is named at the product\n" << out;
#endif
}

}  // namespace
}  // namespace adasync
