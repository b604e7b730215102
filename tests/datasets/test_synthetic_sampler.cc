// Synthetic data sets (Gaussian classes, teacher network) and the Sampler.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/sampler.h"

namespace adasync {
namespace {

std::vector<int> class_counts(const Dataset& d) {
  std::vector<int> counts(size_t(d.classes), 0);
  for (int32_t y : d.y) {
    EXPECT_GE(y, 0);
    EXPECT_LT(y, d.classes);
    if (y >= 0 && y < d.classes) ++counts[size_t(y)];
  }
  return counts;
}

// Number of test rows that also occur in train (the streams must not overlap).
size_t shared_rows(const Dataset& train, const Dataset& test) {
  size_t shared = 0;
  for (size_t i = 0; i < test.size(); ++i) {
    for (size_t j = 0; j < train.size(); ++j) {
      if (std::equal(test.row(i), test.row(i) + test.dim(), train.row(j))) {
        ++shared;
        break;
      }
    }
  }
  return shared;
}

// Accuracy on `test` of the nearest class mean measured on `train`.
double nearest_mean_accuracy(const Dataset& train, const Dataset& test) {
  const size_t dim = train.dim();
  std::vector<double> mean(size_t(train.classes) * dim, 0.0);
  std::vector<int> n(size_t(train.classes), 0);
  for (size_t i = 0; i < train.size(); ++i) {
    ++n[size_t(train.y[i])];
    for (size_t k = 0; k < dim; ++k) mean[size_t(train.y[i]) * dim + k] += train.row(i)[k];
  }
  for (int c = 0; c < train.classes; ++c) {
    for (size_t k = 0; k < dim; ++k) mean[size_t(c) * dim + k] /= std::max(1, n[size_t(c)]);
  }
  size_t right = 0;
  for (size_t i = 0; i < test.size(); ++i) {
    int best = 0;
    double best_d = INFINITY;
    for (int c = 0; c < train.classes; ++c) {
      double d2 = 0;
      for (size_t k = 0; k < dim; ++k) {
        const double diff = test.row(i)[k] - mean[size_t(c) * dim + k];
        d2 += diff * diff;
      }
      if (d2 < best_d) {
        best_d = d2;
        best = c;
      }
    }
    right += best == test.y[i];
  }
  return double(right) / double(test.size());
}

TEST(Gaussian, ShapesLabelsAndBalance) {
  const DataSplit s = make_gaussian_classes(5000, 1000, 16, 10, 1.0, 3);
  for (const Dataset* d : {&s.train, &s.test}) {
    EXPECT_EQ(d->name, "gaussian");
    EXPECT_EQ(d->c, 1);
    EXPECT_EQ(d->h, 1);
    EXPECT_EQ(d->w, 16);
    EXPECT_EQ(d->dim(), 16u);
    EXPECT_EQ(d->classes, 10);
    EXPECT_EQ(d->x.size(), d->size() * 16);
  }
  EXPECT_EQ(s.train.size(), 5000u);
  EXPECT_EQ(s.test.size(), 1000u);
  // 500 expected per class, binomial sd ~21: a generous 5-sd band.
  for (int c : class_counts(s.train)) {
    EXPECT_GT(c, 400);
    EXPECT_LT(c, 600);
  }
  class_counts(s.test);
}

TEST(Gaussian, DeterministicPerSeed) {
  const DataSplit a = make_gaussian_classes(300, 100, 8, 4, 1.0, 42);
  const DataSplit b = make_gaussian_classes(300, 100, 8, 4, 1.0, 42);
  const DataSplit c = make_gaussian_classes(300, 100, 8, 4, 1.0, 43);
  EXPECT_EQ(a.train.x, b.train.x);
  EXPECT_EQ(a.train.y, b.train.y);
  EXPECT_EQ(a.test.x, b.test.x);
  EXPECT_EQ(a.test.y, b.test.y);
  EXPECT_NE(a.train.x, c.train.x);
  EXPECT_NE(a.test.x, c.test.x);
}

TEST(Gaussian, TestSetIndependentOfTrainSize) {
  const DataSplit a = make_gaussian_classes(100, 200, 8, 5, 1.0, 9);
  const DataSplit b = make_gaussian_classes(700, 200, 8, 5, 1.0, 9);
  EXPECT_EQ(a.test.x, b.test.x);
  EXPECT_EQ(a.test.y, b.test.y);
  // The training draws are a stream too: the smaller set is a prefix of the larger.
  EXPECT_TRUE(std::equal(a.train.x.begin(), a.train.x.end(), b.train.x.begin()));
  EXPECT_EQ(shared_rows(b.train, b.test), 0u);
}

TEST(Gaussian, SeparationAndUnitNoise) {
  // Unit noise: the pooled within-class variance is 1.
  const DataSplit s = make_gaussian_classes(20000, 10, 8, 4, 2.0, 5);
  std::vector<double> sum(4 * 8, 0.0), sq(4 * 8, 0.0);
  std::vector<int> n(4, 0);
  for (size_t i = 0; i < s.train.size(); ++i) {
    const size_t y = size_t(s.train.y[i]);
    ++n[y];
    for (size_t k = 0; k < 8; ++k) {
      sum[y * 8 + k] += s.train.row(i)[k];
      sq[y * 8 + k] += double(s.train.row(i)[k]) * s.train.row(i)[k];
    }
  }
  double var = 0;
  for (size_t y = 0; y < 4; ++y) {
    for (size_t k = 0; k < 8; ++k) var += sq[y * 8 + k] - sum[y * 8 + k] * sum[y * 8 + k] / n[y];
  }
  EXPECT_NEAR(var / (20000.0 * 8), 1.0, 0.03);

  // Well separated centres are easy to tell apart; coincident ones are not.
  const DataSplit far = make_gaussian_classes(2000, 1000, 32, 10, 3.0, 6);
  const DataSplit none = make_gaussian_classes(2000, 1000, 32, 10, 0.0, 6);
  EXPECT_GT(nearest_mean_accuracy(far.train, far.test), 0.95);
  EXPECT_LT(nearest_mean_accuracy(none.train, none.test), 0.2);
}

TEST(Gaussian, BadArguments) {
  EXPECT_THROW(make_gaussian_classes(10, 10, 0, 2, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(make_gaussian_classes(10, 10, 4, 0, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(make_gaussian_classes(10, 10, 4, 2, -1.0, 0), std::invalid_argument);
  EXPECT_THROW(make_gaussian_classes(10, 10, 4, 2, NAN, 0), std::invalid_argument);
}

TEST(Teacher, ShapesDeterminismAndIndependence) {
  const DataSplit a = make_teacher(2000, 500, 12, 5, 1);
  const DataSplit b = make_teacher(2000, 500, 12, 5, 1);
  const DataSplit c = make_teacher(2000, 500, 12, 5, 2);
  const DataSplit d = make_teacher(300, 500, 12, 5, 1);
  EXPECT_EQ(a.train.name, "teacher");
  EXPECT_EQ(a.train.w, 12);
  EXPECT_EQ(a.train.dim(), 12u);
  EXPECT_EQ(a.train.size(), 2000u);
  EXPECT_EQ(a.test.size(), 500u);
  EXPECT_EQ(a.train.x, b.train.x);
  EXPECT_EQ(a.train.y, b.train.y);
  EXPECT_EQ(a.test.y, b.test.y);
  EXPECT_NE(a.train.x, c.train.x);
  EXPECT_NE(a.train.y, c.train.y);
  EXPECT_EQ(a.test.x, d.test.x);
  EXPECT_EQ(a.test.y, d.test.y);
  EXPECT_EQ(shared_rows(a.train, a.test), 0u);
}

TEST(Teacher, InputsStandardAndLabelsUsed) {
  const DataSplit s = make_teacher(20000, 100, 16, 10, 7);
  double sum = 0, sq = 0;
  for (float v : s.train.x) {
    sum += v;
    sq += double(v) * v;
  }
  const double n = double(s.train.x.size());
  EXPECT_NEAR(sum / n, 0.0, 0.02);
  EXPECT_NEAR(sq / n, 1.0, 0.03);
  // Labels are a non-trivial function of x: no class takes most of the inputs.
  const auto counts = class_counts(s.train);
  const int used = int(std::count_if(counts.begin(), counts.end(), [](int c) { return c > 0; }));
  EXPECT_GE(used, 5);
  EXPECT_LT(*std::max_element(counts.begin(), counts.end()), 20000 / 2);
}

TEST(LoadDataset, SyntheticByName) {
  for (const char* name : {"gaussian", "teacher"}) {
    const DataSplit a = load_dataset(name, "", 11);
    const DataSplit b = load_dataset(name, "", 11);
    const DataSplit c = load_dataset(name, "", 12);
    EXPECT_EQ(a.train.name, name);
    EXPECT_EQ(a.train.size(), 8000u);
    EXPECT_EQ(a.test.size(), 2000u);
    EXPECT_EQ(a.train.dim(), 32u);
    EXPECT_EQ(a.train.classes, 10);
    EXPECT_EQ(a.train.x, b.train.x);
    EXPECT_NE(a.train.x, c.train.x);
    ASSERT_EQ(a.mean.size(), 1u);
    double sum = 0, sq = 0;
    for (float v : a.train.x) sum += v;
    const double mean = sum / double(a.train.x.size());
    for (float v : a.train.x) sq += (v - mean) * (v - mean);
    EXPECT_NEAR(mean, 0.0, 1e-5) << name;
    EXPECT_NEAR(std::sqrt(sq / double(a.train.x.size())), 1.0, 1e-5) << name;
  }
}

TEST(Normalize, PerChannelStatisticsAndConstantChannel) {
  DataSplit s;
  s.train.c = 2;
  s.train.h = 1;
  s.train.w = 2;
  s.train.classes = 2;
  // Channel 0 holds 1, 3, 5, 7 (mean 4, population sd sqrt(5)); channel 1 is constant 9.
  s.train.x = {1, 3, 9, 9, 5, 7, 9, 9};
  s.train.y = {0, 1};
  s.test = s.train;
  s.test.x = {4, 4, 9, 9};
  s.test.y = {0};
  normalize(s);
  ASSERT_EQ(s.mean.size(), 2u);
  EXPECT_FLOAT_EQ(s.mean[0], 4.0f);
  EXPECT_FLOAT_EQ(s.stddev[0], std::sqrt(5.0f));
  EXPECT_FLOAT_EQ(s.mean[1], 9.0f);
  EXPECT_FLOAT_EQ(s.stddev[1], 1.0f);  // zero spread falls back to 1
  EXPECT_FLOAT_EQ(s.train.x[0], -3.0f / std::sqrt(5.0f));
  EXPECT_FLOAT_EQ(s.train.x[5], 3.0f / std::sqrt(5.0f));
  EXPECT_FLOAT_EQ(s.train.x[2], 0.0f);
  EXPECT_FLOAT_EQ(s.test.x[0], 0.0f);
  EXPECT_FLOAT_EQ(s.test.x[3], 0.0f);

  DataSplit bad = s;
  bad.test.c = 1;
  bad.test.w = 4;
  EXPECT_THROW(normalize(bad), DataError);
}

// ---- Sampler ----

std::vector<std::vector<int32_t>> run_next(Sampler& s, int n) {
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(s.next(&out[size_t(i)]), uint64_t(i));
  return out;
}

TEST(Sampler, AtMatchesNext) {
  Sampler s(1000, 32, 7);
  EXPECT_EQ(s.batches_per_epoch(), 31u);
  const auto seq = run_next(s, 100);  // a little over three epochs
  EXPECT_EQ(s.position(), 100u);
  Sampler t(1000, 32, 7);
  std::vector<int32_t> b;
  for (uint64_t i : {99u, 0u, 62u, 31u, 30u, 5u, 93u, 1u}) {
    t.at(i, &b);
    EXPECT_EQ(b, seq[i]) << "batch " << i;
  }
  s.set_position(40);
  EXPECT_EQ(s.next(&b), 40u);
  EXPECT_EQ(b, seq[40]);
}

TEST(Sampler, EachEpochIsAPermutation) {
  Sampler s(1000, 32, 3);
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int32_t> seen;
    std::vector<int32_t> b;
    for (uint64_t k = 0; k < s.batches_per_epoch(); ++k) {
      s.next(&b);
      ASSERT_EQ(b.size(), 32u);
      for (int32_t i : b) {
        EXPECT_GE(i, 0);
        EXPECT_LT(i, 1000);
        EXPECT_TRUE(seen.insert(i).second) << "index " << i << " twice in epoch " << epoch;
      }
    }
    EXPECT_EQ(seen.size(), 31u * 32u);
  }
}

TEST(Sampler, ShardsAreDisjointAndCover) {
  const int shards = 4;
  std::set<int32_t> all;
  size_t total = 0;
  for (int shard = 0; shard < shards; ++shard) {
    Sampler s(1003, 1, 5, shard, shards);  // batch 1: drop-last drops nothing
    EXPECT_EQ(s.indices_per_epoch(), shard < 3 ? 251u : 250u);
    std::vector<int32_t> b;
    for (uint64_t k = 0; k < s.batches_per_epoch(); ++k) {
      s.next(&b);
      ASSERT_EQ(b.size(), 1u);
      EXPECT_EQ(b[0] % shards, shard);
      all.insert(b[0]);
      ++total;
    }
  }
  EXPECT_EQ(total, 1003u);
  EXPECT_EQ(all.size(), 1003u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 1002);
}

TEST(Sampler, ShardsShuffleDifferently) {
  // Same seed, two shards: their orders, in shard-local terms, differ.
  Sampler a(1000, 500, 1, 0, 2), b(1000, 500, 1, 1, 2);
  std::vector<int32_t> ba, bb;
  a.at(0, &ba);
  b.at(0, &bb);
  for (auto& i : ba) i /= 2;
  for (auto& i : bb) i /= 2;
  EXPECT_NE(ba, bb);
}

TEST(Sampler, EpochsDifferAndSeedsMatter) {
  Sampler s(200, 200, 1);
  std::vector<int32_t> e0, e1, again;
  s.at(0, &e0);
  s.at(1, &e1);
  EXPECT_NE(e0, e1);
  s.at(0, &again);
  EXPECT_EQ(e0, again);
  std::vector<int32_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(sorted, e0);  // shuffled at all

  Sampler same(200, 200, 1), other(200, 200, 2);
  std::vector<int32_t> x, y;
  same.at(0, &x);
  other.at(0, &y);
  EXPECT_EQ(x, e0);
  EXPECT_NE(y, e0);
}

TEST(Sampler, ShuffleIsUniformAtAPosition) {
  // Over many epochs each index lands first about equally often (a Sattolo-style
  // off-by-one would never leave an index in place; a biased shuffle would skew).
  Sampler s(10, 10, 8);
  std::vector<int> first(10, 0);
  std::vector<int32_t> b;
  for (uint64_t e = 0; e < 4000; ++e) {
    s.at(e, &b);
    ++first[size_t(b[0])];
    EXPECT_EQ(b.size(), 10u);
  }
  for (int c : first) {  // 400 expected, sd ~19
    EXPECT_GT(c, 300);
    EXPECT_LT(c, 500);
  }
}

TEST(Sampler, NoShuffleIsInOrder) {
  Sampler s(100, 8, 99, 0, 1, /*shuffle=*/false);
  EXPECT_EQ(s.batches_per_epoch(), 12u);
  std::vector<int32_t> b;
  for (uint64_t k = 0; k < 30; ++k) {
    s.next(&b);
    for (int j = 0; j < 8; ++j) EXPECT_EQ(b[size_t(j)], int32_t((k % 12) * 8 + j)) << "batch " << k;
  }
  Sampler sh(100, 5, 99, 2, 3, false);  // owns 2, 5, 8, ...
  sh.at(1, &b);
  EXPECT_EQ(b, (std::vector<int32_t>{17, 20, 23, 26, 29}));
}

TEST(Sampler, RejectsBadArguments) {
  EXPECT_THROW(Sampler(100, 0, 1), std::invalid_argument);
  EXPECT_THROW(Sampler(100, -3, 1), std::invalid_argument);
  EXPECT_THROW(Sampler(100, 4, 1, 0, 0), std::invalid_argument);
  EXPECT_THROW(Sampler(100, 4, 1, -1, 2), std::invalid_argument);
  EXPECT_THROW(Sampler(100, 4, 1, 2, 2), std::invalid_argument);
  EXPECT_THROW(Sampler(100, 101, 1), std::invalid_argument);
  EXPECT_THROW(Sampler(0, 1, 1), std::invalid_argument);
  EXPECT_NO_THROW(Sampler(10, 3, 1, 0, 4));  // shard 0 owns 0, 4, 8
  try {
    Sampler(10, 3, 1, 3, 4);  // shard 3 owns 3, 7
    ADD_FAILURE() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("batch size 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 indices"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace adasync
