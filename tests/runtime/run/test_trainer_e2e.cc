// End to end: the trainer on Fashion-MNIST, as a user runs it.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include "runtime/run/trainer.h"
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

// The CIFAR recipe on Fashion-MNIST padded to CIFAR-10's size: resnet20 with
// batch norm, augmentation, momentum, weight decay off the norms, a cosine
// schedule; it learns, and evaluation (eval mode, the PS's running buffers) says so.
TEST(TrainerE2E, Resnet20LearnsFashionMnist32WithTheCifarRecipe) {
  struct stat st;
  if (stat(test::fashion_mnist_dir().c_str(), &st) != 0)
    GTEST_SKIP() << "Fashion-MNIST not installed at " << test::fashion_mnist_dir()
                 << " (Debian package dataset-fashion-mnist)";
  TrainConfig c;
  c.model = "resnet20";
  c.dataset = "fashion-mnist32";
  c.augment = true;
  c.batch = 32;
  c.lr = 0.1;
  c.momentum = 0.9;
  c.opt.weight_decay = 5e-4;
  c.opt.no_decay_bn = true;
  c.lr_schedule = LrSchedule::Cosine;
  c.epochs = 160.0 * 32 / 60000;  // 160 updates, the cosine schedule spanning them
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  const RunSummary s = Trainer(c).run();
  EXPECT_GE(s.updates, 160);
  // Ten classes: 10% by chance. Seeds 1-6 give 66-70%. (Cut short at a
  // high rate, the running buffers trail the weights: 26-51% at 80 updates
  // of a one-epoch schedule.)
  EXPECT_GE(s.final_eval.accuracy, 0.60);
}

}  // namespace
}  // namespace adasync
