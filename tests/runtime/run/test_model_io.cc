// Models in and out of the trainer: --save-model then --init-from starts from
// exactly the saved parameters, --export writes a checkpoint's parameters as
// the run saved them, and bad files and flag combinations exit 2 naming the
// flag, the tensor and the shapes.
#include <algorithm>
#include <gtest/gtest.h>

#include <filesystem>

#include "models/safetensors.h"
#include "runtime/run/model_io.h"
#include "runtime/run/trainer.h"
#include "tests/support/files.h"
#include "tests/support/small_data.h"

namespace adasync {
namespace {
using test::removed_path;
namespace fs = std::filesystem;

TrainConfig base() {
  TrainConfig c;
  c.model = "mlp";
  c.dataset = "gaussian";
  c.batch = 16;
  c.workers = 3;
  c.set_variant("k-async");
  c.k = 2;
  c.clock = ClockKind::Virtual;
  c.straggler = "exp:mean=1";
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  c.threads = 1;
  return c;
}

TEST(ModelIo, SaveThenInitFromStartsFromTheSavedParameters) {
  TrainConfig a = base();
  a.max_updates = 40;
  a.save_model = removed_path("saved.safetensors");
  const RunSummary sa = Trainer(a, test::small_data()).run();
  EXPECT_EQ(sa.saved_model, a.save_model);
  ASSERT_TRUE(fs::exists(a.save_model));
  EXPECT_FALSE(fs::exists(a.save_model + ".tmp"));

  // A run that stops before its first update ends where it started.
  TrainConfig b = base();
  b.init_from = a.save_model;
  b.time_budget = 1e-9;
  b.save_model = removed_path("again.safetensors");
  const RunSummary sb = Trainer(b, test::small_data()).run();
  EXPECT_EQ(sb.updates, 0);
  EXPECT_EQ(sb.params, sa.params);
  EXPECT_EQ(sb.checksum, sa.checksum);
  EXPECT_NEAR(sb.final_eval.loss, sa.final_eval.loss, 1e-12);

  // The file holds the model's tensors and what a reader needs besides.
  const SafetensorsFile f = read_safetensors(a.save_model);
  EXPECT_EQ(f.tensors.front().name, "fc1.weight");
  EXPECT_EQ(f.tensors.front().shape, (std::vector<int64_t>{256, 16}));
  EXPECT_EQ(f.metadata.at("model"), "mlp");
  EXPECT_EQ(f.metadata.at("description"), "fc256,relu,fc256,relu,fc");
  EXPECT_EQ(f.metadata.at("input_shape"), "[1,1,16]");
  EXPECT_EQ(f.metadata.at("classes"), "4");
  EXPECT_EQ(f.metadata.at("dataset"), "gaussian");
  EXPECT_EQ(f.metadata.at("updates"), "40");
  EXPECT_EQ(nlohmann::json::parse(f.metadata.at("normalization_mean")).size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(f.metadata.at("settings")).at("variant"), "k-async");
  EXPECT_FALSE(f.metadata.at("adasync_version").empty());

  // And the run from it trains on: different from a fresh start's.
  TrainConfig c = base();
  c.max_updates = 20;
  TrainConfig d = c;
  d.init_from = a.save_model;
  EXPECT_NE(Trainer(c, test::small_data()).run().checksum, Trainer(d, test::small_data()).run().checksum);
}

TEST(ModelIo, ExportWritesACheckpointsParametersAsTheRunSavedThem) {
  const std::string dir = removed_path("export_ckpt");
  TrainConfig a = base();
  a.max_updates = 30;
  a.checkpoint_dir = dir;
  a.save_model = removed_path("final.safetensors");
  // The export loads the dataset by name, so the run uses the named one too.
  const RunSummary s = Trainer(a).run();
  const auto ckpts = list_checkpoints(dir);
  ASSERT_FALSE(ckpts.empty());
  const std::string out = removed_path("exported.safetensors");
  const std::string line = export_checkpoint(ckpts[0], out);
  EXPECT_NE(line.find("update " + std::to_string(s.updates)), std::string::npos) << line;
  const SafetensorsFile saved = read_safetensors(a.save_model), exported = read_safetensors(out);
  EXPECT_EQ(exported.data, saved.data);
  EXPECT_EQ(exported.metadata.at("updates"), std::to_string(s.updates));
  EXPECT_EQ(exported.metadata.at("normalization_std"), saved.metadata.at("normalization_std"));
  const auto tensors = model_param_tensors("mlp", Shape{1, 1, 32}, 10);  // the named gaussian set;
  EXPECT_EQ(read_model_params(exported, tensors, out), s.params);
}

int run_main(std::vector<std::string> args, std::string* err) {
  // --export takes everything from the checkpoint: no other flag.
  if (std::find(args.begin(), args.end(), "--export") != args.end())
    args.insert(args.begin(), {"trainer", "--progress", "none"});
  else
    args.insert(args.begin(), {"trainer", "--progress", "none", "--dataset", "gaussian", "--devices", "cpu"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  const int rc = trainer_main(int(argv.size()), argv.data());
  *err = testing::internal::GetCapturedStderr();
  return rc;
}

TEST(ModelIo, BadInputsExitTwoWithOneClearMessage) {
  const std::string saved = removed_path("mlp.safetensors");
  std::string err;
  ASSERT_EQ(run_main({"--model", "mlp", "--max-updates", "2", "--save-model", saved}, &err), 0) << err;

  EXPECT_EQ(run_main({"--model", "fc128,relu,fc", "--init-from", saved, "--max-updates", "1"}, &err), 2);
  EXPECT_EQ(err, "trainer: --init-from " + saved +
                     " (model 'fc128,relu,fc'): tensor 'fc1.weight': expected shape [128, 32], found [256, 32]\n");
  EXPECT_EQ(run_main({"--model", "linear", "--init-from", saved, "--max-updates", "1"}, &err), 2);
  EXPECT_NE(err.find("tensor 'fc1.weight': expected shape [10, 32], found [256, 32]"), std::string::npos) << err;

  const std::string cut = removed_path("cut.safetensors");
  fs::copy_file(saved, cut);
  fs::resize_file(cut, fs::file_size(saved) - 4);
  EXPECT_EQ(run_main({"--model", "mlp", "--init-from", cut}, &err), 2);
  EXPECT_NE(err.find("--init-from " + cut + ": tensor 'fc3.bias'"), std::string::npos) << err;
  EXPECT_NE(err.find("end past the data section"), std::string::npos) << err;

  EXPECT_EQ(run_main({"--model", "mlp", "--init-from", "/nonexistent.safetensors"}, &err), 2);
  EXPECT_EQ(err, "trainer: --init-from /nonexistent.safetensors: cannot open: No such file or directory\n");
  EXPECT_EQ(run_main({"--save-model", "/nonexistent/m.safetensors"}, &err), 2);
  EXPECT_EQ(err, "trainer: --save-model /nonexistent/m.safetensors: expected an existing directory '/nonexistent', "
                 "found none\n");
  EXPECT_EQ(run_main({"--init-from", saved, "--resume", "--checkpoint-dir", "x"}, &err), 2);
  EXPECT_NE(err.find("--init-from with --resume"), std::string::npos) << err;
  EXPECT_EQ(run_main({"--export", "ckpt.bin"}, &err), 2);
  EXPECT_NE(err.find("--export ckpt.bin: expected --save-model"), std::string::npos) << err;
  EXPECT_EQ(run_main({"--export", "/nonexistent.bin", "--save-model", removed_path("x.safetensors")}, &err), 2);
  EXPECT_NE(err.find("--export: /nonexistent.bin: cannot open: No such file or directory"), std::string::npos) << err;
  EXPECT_EQ(run_main({"--model", "conv5x5-8-p0,fc"}, &err), 2);  // gaussian inputs are 1x1x32
  EXPECT_NE(err.find("layer 1 'conv5x5-8-p0' does not fit its input 1x1x32"), std::string::npos) << err;
}

}  // namespace
}  // namespace adasync
