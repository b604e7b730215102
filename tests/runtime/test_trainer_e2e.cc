// End to end: the trainer on Fashion-MNIST, as a user runs it.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include "runtime/trainer.h"
#include "tests/support/test_util.h"

namespace adasync {
namespace {

TEST(TrainerE2E, CnnReaches80PercentOnFashionMnistIn300UpdatesOnTheCpu) {
  struct stat st;
  if (stat(test::fashion_mnist_dir().c_str(), &st) != 0)
    GTEST_SKIP() << "Fashion-MNIST not installed at " << test::fashion_mnist_dir()
                 << " (Debian package dataset-fashion-mnist)";
  TrainConfig c;
  c.max_updates = 300;
  c.batch = 64;
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  Trainer t(c);
  const RunSummary s = t.run();
  EXPECT_EQ(s.updates, 300);
  EXPECT_EQ(s.final_eval.samples, 10000u);
  EXPECT_GE(s.final_eval.accuracy, 0.80);
}

}  // namespace
}  // namespace adasync
