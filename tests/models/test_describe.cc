// Models from a description: the zoo names and their descriptions build the
// same model (layers, layout, initial parameters), the PyTorch names and
// shapes, the canonical text, and one clear error for every malformed or
// ill-fitting description.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "models/model.h"

namespace adasync {
namespace {

std::string layers_of(const Model<float>& m) {
  const std::string s = m.summary();
  return s.substr(s.find('\n'));  // without the first line, which names the arch as given
}

TEST(Describe, EveryZooNameBuildsTheSameModelAsItsDescription) {
  auto ctx = Context::cpu();
  ASSERT_EQ(model_names().size(), zoo_descriptions().size());
  for (const auto& [name, desc] : zoo_descriptions()) {
    Model<float> a(*ctx, name, Shape{1, 28, 28}, 10, 2), b(*ctx, desc, Shape{1, 28, 28}, 10, 2);
    EXPECT_EQ(a.num_params(), b.num_params()) << name;
    EXPECT_EQ(layers_of(a), layers_of(b)) << name;
    EXPECT_EQ(a.description(), desc) << name;
    ASSERT_EQ(a.param_tensors().size(), b.param_tensors().size());
    for (size_t i = 0; i < a.param_tensors().size(); ++i) {
      EXPECT_EQ(a.param_tensors()[i].name, b.param_tensors()[i].name);
      EXPECT_EQ(a.param_tensors()[i].offset, b.param_tensors()[i].offset);
    }
    std::vector<float> pa(a.num_params()), pb(b.num_params());
    a.init_params(pa.data(), 11);
    b.init_params(pb.data(), 11);
    EXPECT_EQ(pa, pb) << name;  // same layers in the same places: the same RNG streams
  }
}

// The layer lists the zoo had when it was C++ code: a description must keep
// them, since each layer's place picks its RNG stream.
TEST(Describe, TheZooKeepsItsLayerLists) {
  auto summary = [](const std::string& arch) {
    auto ctx = Context::cpu();
    return layers_of(Model<float>(*ctx, arch, Shape{1, 28, 28}, 10, 1));
  };
  EXPECT_EQ(summary("cnn"),
            "\n  conv5x5-32 pad2 -> 32x28x28  (832 params)\n  relu+maxpool2 -> 32x14x14\n"
            "  conv5x5-64 pad2 -> 64x14x14  (51264 params)\n  relu+maxpool2 -> 64x7x7\n"
            "  linear(3136->1024) -> 1024x1x1  (3212288 params)\n  relu -> 1024x1x1\n"
            "  linear(1024->10) -> 10x1x1  (10250 params)\n");
  EXPECT_EQ(summary("lenet5"),
            "\n  conv5x5-6 pad2 -> 6x28x28  (156 params)\n  relu+maxpool2 -> 6x14x14\n"
            "  conv5x5-16 -> 16x10x10  (2416 params)\n  relu+maxpool2 -> 16x5x5\n"
            "  linear(400->120) -> 120x1x1  (48120 params)\n  relu -> 120x1x1\n"
            "  linear(120->84) -> 84x1x1  (10164 params)\n  relu -> 84x1x1\n"
            "  linear(84->10) -> 10x1x1  (850 params)\n");
  EXPECT_EQ(summary("mlp"),
            "\n  linear(784->256) -> 256x1x1  (200960 params)\n  relu -> 256x1x1\n"
            "  linear(256->256) -> 256x1x1  (65792 params)\n  relu -> 256x1x1\n"
            "  linear(256->10) -> 10x1x1  (2570 params)\n");
  EXPECT_EQ(summary("linear"), "\n  linear(784->10) -> 10x1x1  (7850 params)\n");
}

TEST(Describe, ParametersCarryPyTorchNamesAndShapes) {
  const auto t = model_param_tensors("cnn", Shape{1, 28, 28}, 10);
  ASSERT_EQ(t.size(), 8u);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
      {"conv1.weight", {32, 1, 5, 5}}, {"conv1.bias", {32}},  {"conv2.weight", {64, 32, 5, 5}}, {"conv2.bias", {64}},
      {"fc1.weight", {1024, 3136}},    {"fc1.bias", {1024}},  {"fc2.weight", {10, 1024}},       {"fc2.bias", {10}}};
  size_t offset = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].name, want[i].first);
    EXPECT_EQ(t[i].shape, want[i].second) << t[i].name;
    EXPECT_EQ(t[i].offset, offset) << t[i].name;  // weight then bias, layer after layer, no gaps
    offset += t[i].count;
  }
  auto ctx = Context::cpu();
  EXPECT_EQ(offset, Model<float>(*ctx, "cnn", Shape{1, 28, 28}, 10, 1).num_params());
  const auto l = model_param_tensors("lenet5", Shape{1, 28, 28}, 10);
  EXPECT_EQ(l.back().name, "fc3.bias");
  EXPECT_EQ(l[4].shape, (std::vector<int64_t>{120, 400}));
  EXPECT_EQ(model_param_tensors("linear", Shape{3, 4, 4}, 5)[0].shape, (std::vector<int64_t>{5, 48}));
}

TEST(Describe, CanonicalTextFusionAndOptions) {
  EXPECT_EQ(parse_model(" conv3x3-8 , relu , pool2 , fc ").description(), "conv3x3-8,relu,pool2,fc");
  EXPECT_EQ(parse_model("conv3x3-8-p1-s2,fc").description(), "conv3x3-8-s2,fc");  // p1 is the default for 3x3
  EXPECT_EQ(parse_model("conv4x4-8-s2-p0,pool3-s1,fc").description(), "conv4x4-8-p0-s2,pool3-s1,fc");
  EXPECT_EQ(parse_model("conv3x3-8,pool2,relu,fc").layers.size(), 4u);  // pool then relu: two layers
  const ModelSpec s = parse_model("conv3x3-8,relu,pool2,relu,fc10");
  ASSERT_EQ(s.layers.size(), 4u);  // relu,pool2 fused
  EXPECT_EQ(s.layers[1].kind, LayerSpec::Kind::ReluPool);
  EXPECT_EQ(s.layers[2].position, 4);
  EXPECT_EQ(s.layers[3].out, 10);
}

TEST(Describe, AJsonFileDescribesTheSameModel) {
  const std::string path = ::testing::TempDir() + "/lenet5.json";
  std::ofstream(path) << R"({"name": "lenet5 by hand", "layers": [
      {"type": "conv", "out": 6, "kernel": 5}, "relu", {"type": "pool", "size": 2},
      {"type": "conv", "out": 16, "kernel": 5, "pad": 0, "stride": 1}, {"type": "relu"}, "pool2",
      {"type": "fc", "out": 120}, "relu", "fc84", "relu", {"type": "fc"}]})";
  EXPECT_EQ(parse_model(path).description(), zoo_descriptions()[1].second);
  auto ctx = Context::cpu();
  Model<float> a(*ctx, "lenet5", Shape{1, 28, 28}, 10, 1), b(*ctx, path, Shape{1, 28, 28}, 10, 1);
  std::vector<float> pa(a.num_params()), pb(b.num_params());
  a.init_params(pa.data(), 3);
  b.init_params(pb.data(), 3);
  EXPECT_EQ(pa, pb);
}

struct BadDescription {
  std::string model;
  std::string message;  // the whole message, so that each stays clear
};

void PrintTo(const BadDescription& b, std::ostream* os) { *os << "--model '" << b.model << "'"; }  // CTest's name

class BadDescriptions : public ::testing::TestWithParam<BadDescription> {};

TEST_P(BadDescriptions, AreOneClearError) {
  const BadDescription& b = GetParam();
  auto ctx = Context::cpu();
  try {
    Model<float> m(*ctx, b.model, Shape{1, 28, 28}, 10, 1);
    FAIL() << "no error for " << b.model;
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), b.message);
  }
}

const char* kGrammar = "convKxK-C[-pP][-sS], poolN[-sS], relu, fcN, fc, bn, gap, dropP or resC[-sS][-proj]";

INSTANTIATE_TEST_SUITE_P(
    Table, BadDescriptions,
    ::testing::Values(
        BadDescription{"", "--model '': expected a zoo name (cnn, lenet5, mlp, linear, resnet20, resnet32, resnet56, allcnn), a layer list such as "
                           "conv5x5-32,relu,pool2,fc or a .json file"},
        BadDescription{"resnet", std::string("--model 'resnet': not a zoo model (cnn, lenet5, mlp, linear, resnet20, resnet32, resnet56, allcnn), a .json "
                                             "file or a layer: expected ") + kGrammar},
        BadDescription{"conv5x5-32,relu,maxpool2,fc",
                       std::string("--model 'conv5x5-32,relu,maxpool2,fc': layer 3 'maxpool2': not a layer (expected ") +
                           kGrammar + ")"},
        BadDescription{"relu,,fc", std::string("--model 'relu,,fc': layer 2 '': empty layer (expected ") + kGrammar + ")"},
        BadDescription{"conv5x5-0,fc", "--model 'conv5x5-0,fc': layer 1 'conv5x5-0': expected output channels in "
                                       "[1, 1048576], found '0'"},
        BadDescription{"conv5x3-4,fc", "--model 'conv5x3-4,fc': layer 1 'conv5x3-4': expected a square kernel KxK, "
                                       "found 5x3"},
        BadDescription{"conv5-4,fc", "--model 'conv5-4,fc': layer 1 'conv5-4': expected convKxK-C (e.g. conv5x5-32), "
                                     "found 'conv5-4'"},
        BadDescription{"conv5x5,fc", "--model 'conv5x5,fc': layer 1 'conv5x5': expected convKxK-C (e.g. conv5x5-32), "
                                     "found 'conv5x5'"},
        BadDescription{"conv5x5-8-q1,fc", "--model 'conv5x5-8-q1,fc': layer 1 'conv5x5-8-q1': unexpected option "
                                          "'-q1' (expected -pP padding or -sS stride, each at most once)"},
        BadDescription{"conv5x5-8-s1-s2,fc", "--model 'conv5x5-8-s1-s2,fc': layer 1 'conv5x5-8-s1-s2': unexpected "
                                             "option '-s2' (expected -pP padding or -sS stride, each at most once)"},
        BadDescription{"pool2-p1,fc", "--model 'pool2-p1,fc': layer 1 'pool2-p1': unexpected option '-p1' (expected "
                                      "-sS stride, each at most once)"},
        BadDescription{"pool0,fc", "--model 'pool0,fc': layer 1 'pool0': expected pool size in [1, 1024], found '0'"},
        BadDescription{"fc-3,fc", "--model 'fc-3,fc': layer 1 'fc-3': expected fc outputs in [1, 1048576], found '-3'"},
        BadDescription{"fc12", "--model 'fc12': layer 1 'fc12' ends the network with 12x1x1 = 12 outputs, but the "
                               "dataset has 10 classes (end the description with fc)"},
        BadDescription{"conv5x5-8,relu", "--model 'conv5x5-8,relu': layer 2 'relu' ends the network with 8x28x28 = "
                                         "6272 outputs, but the dataset has 10 classes (end the description with fc)"},
        BadDescription{"conv5x5-8-p0,pool2,pool2,pool2,pool2,pool2,fc",
                       "--model 'conv5x5-8-p0,pool2,pool2,pool2,pool2,pool2,fc': layer 6 'pool2' does not fit its "
                       "input 8x1x1: a 2x2 window needs at least 2x2"},
        BadDescription{"pool4,relu,pool4,conv5x5-8-p0,fc",
                       "--model 'pool4,relu,pool4,conv5x5-8-p0,fc': layer 4 'conv5x5-8-p0' does not fit its input "
                       "1x1x1: a 5x5 kernel with padding 0 needs at least 5x5"},
        BadDescription{"conv29x29-2-p0,fc", "--model 'conv29x29-2-p0,fc': layer 1 'conv29x29-2-p0' does not fit its "
                                            "input 1x28x28: a 29x29 kernel with padding 0 needs at least 29x29"},
        BadDescription{"pool7,relu,pool29,fc", "--model 'pool7,relu,pool29,fc': layer 2 'relu,pool29' does not fit "
                                               "its input 1x4x4: a 29x29 window needs at least 29x29"},
        BadDescription{"fc1048576,fc1048576,fc", "--model 'fc1048576,fc1048576,fc': layer 2 'fc1048576' has "
                                                 "1099512676352 parameters for its input 1048576x1x1: more than 2^31"}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

struct BadJson {
  std::string text;
  std::string message;  // after "--model FILE"
};

void PrintTo(const BadJson& b, std::ostream* os) { *os << b.text; }

class BadJsonFiles : public ::testing::TestWithParam<BadJson> {};

TEST_P(BadJsonFiles, AreOneClearError) {
  // One file per case: ctest runs the cases as parallel processes.
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  for (char& c : name)
    if (c == '/') c = '_';
  const std::string path = ::testing::TempDir() + "/bad_model_" + name + ".json";
  std::ofstream(path) << GetParam().text;
  try {
    parse_model(path);
    FAIL() << "no error for " << GetParam().text;
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("--model", 0), 0u) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(GetParam().message), std::string::npos) << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadJsonFiles,
    ::testing::Values(
        BadJson{"{\"layers\": [\"fc\"", "not valid JSON"},
        BadJson{"[\"fc\"]", "expected an object with a non-empty \"layers\" array, found array"},
        BadJson{"{\"layer\": [\"fc\"]}", "expected an object with a non-empty \"layers\" array, found the keys layer"},
        BadJson{"{\"layers\": []}", "non-empty \"layers\" array"},
        BadJson{"{\"layers\": [\"fc\"], \"inputs\": 3}", "unknown key \"inputs\" (expected \"layers\" and optionally \"name\")"},
        BadJson{"{\"layers\": [3]}", "layers[0]: expected a layer token or object, found number"},
        BadJson{"{\"layers\": [\"fc10\", \"softmax\"]}", "layers[1] 'softmax': not a layer"},
        BadJson{"{\"layers\": [{\"out\": 3}]}", "layers[0]: expected a \"type\" of conv, pool, relu, fc, bn, gap, dropout or res"},
        BadJson{"{\"layers\": [{\"type\": \"softmax\"}]}", "layers[0]: unknown type \"softmax\""},
        BadJson{"{\"layers\": [{\"type\": \"dropout\"}]}", "layers[0]: a dropout layer needs \"p\""},
        BadJson{"{\"layers\": [{\"type\": \"dropout\", \"p\": 0.333}]}", "in whole percent, found 0.333"},
        BadJson{"{\"layers\": [{\"type\": \"res\", \"out\": 8, \"projection\": 1}]}", "\"projection\": expected true or false"},
        BadJson{"{\"layers\": [{\"type\": \"conv\", \"out\": 8}, \"fc\"]}",
                "layers[0]: a conv layer needs \"kernel\" (kernel size)"},
        BadJson{"{\"layers\": [{\"type\": \"conv\", \"out\": 8, \"kernel\": 3, \"padding\": 1}, \"fc\"]}",
                "layers[0]: unknown key \"padding\" for a conv layer (expected out, kernel, pad, stride)"},
        BadJson{"{\"layers\": [{\"type\": \"fc\", \"out\": 2.5}]}", "layers[0]: \"out\": expected an integer, found 2.5"},
        BadJson{"{\"layers\": [{\"type\": \"pool\", \"size\": -2}, \"fc\"]}",
                "layers[0]: expected pool size in [1, 1024], found '-2'"},
        BadJson{"{\"layers\": [{\"type\": \"relu\", \"inplace\": true}, \"fc\"]}",
                "layers[0]: unknown key \"inplace\" for a relu layer (expected none)"}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(Describe, AMissingJsonFileIsNamed) {
  try {
    parse_model("/nonexistent/model.json");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "--model /nonexistent/model.json: cannot open the model file");
  }
}

// The CIFAR ResNets (He et al. 2016, option A) have PyTorch's parameter counts
// (269,722 / 464,154 / 853,018), names and buffer layout.
TEST(Describe, ResNetsHavePyTorchsCountsNamesAndBuffers) {
  const Shape cifar{3, 32, 32};
  auto trainable = [&](const std::string& arch) {
    size_t n = 0;
    for (const auto& t : model_param_tensors(arch, cifar, 10)) n += t.kind == TensorKind::Param ? t.count : 0;
    return n;
  };
  EXPECT_EQ(trainable("resnet20"), 269722u);
  EXPECT_EQ(trainable("resnet32"), 464154u);
  EXPECT_EQ(trainable("resnet56"), 853018u);
  EXPECT_EQ(trainable("allcnn"), 1369738u);  // All-CNN-C

  const auto t = model_param_tensors("resnet20", cifar, 10);
  auto find = [&](const std::string& name) -> const ParamTensor& {
    for (const auto& x : t)
      if (x.name == name) return x;
    ADD_FAILURE() << "no tensor " << name;
    return t.front();
  };
  EXPECT_EQ(t[0].name, "conv1.weight");  // no bias: a bn follows
  EXPECT_EQ(t[0].shape, (std::vector<int64_t>{16, 3, 3, 3}));
  EXPECT_EQ(t[1].name, "bn1.weight");
  EXPECT_FALSE(t[1].decay);
  EXPECT_EQ(find("layer1.2.conv2.weight").shape, (std::vector<int64_t>{16, 16, 3, 3}));
  EXPECT_EQ(find("layer2.0.conv1.weight").shape, (std::vector<int64_t>{32, 16, 3, 3}));
  EXPECT_EQ(find("layer3.2.bn2.bias").shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(find("fc1.weight").shape, (std::vector<int64_t>{10, 64}));
  EXPECT_TRUE(find("fc1.weight").decay);
  EXPECT_FALSE(find("fc1.bias").decay);
  // Buffers after every parameter: 19 batch norms, each mean, var and a scalar counter.
  const ParamLayout l = layout_of(t);
  EXPECT_EQ(l.trainable, 269722u);
  EXPECT_EQ(l.buffers.size(), 19u * 3);
  EXPECT_EQ(l.total - l.trainable, size_t(2 * (16 + 6 * 16 + 6 * 32 + 6 * 64) + 19));
  const ParamTensor& nbt = find("layer3.2.bn2.num_batches_tracked");
  EXPECT_EQ(nbt.kind, TensorKind::Count);
  EXPECT_TRUE(nbt.shape.empty());
  EXPECT_EQ(nbt.offset + 1, l.total);
  EXPECT_EQ(find("bn1.running_var").offset, l.trainable + 16);
  // A projection block names its shortcut as PyTorch's nn.Sequential does.
  const auto p = model_param_tensors("conv3x3-4,bn,relu,res8-s2-proj,gap,fc", Shape{3, 8, 8}, 10);
  bool seen = false;
  for (const auto& x : p) seen = seen || x.name == "layer1.0.shortcut.1.running_mean";
  EXPECT_TRUE(seen);
}

TEST(Describe, ResidualTokensAndErrors) {
  EXPECT_EQ(parse_model("conv3x3-8,bn,relu,res8,res16-s2-proj,drop30,gap,fc").description(),
            "conv3x3-8,bn,relu,res8,res16-s2-proj,drop30,gap,fc");
  EXPECT_FALSE(parse_model("conv3x3-8,bn,fc").layers[0].bias);
  EXPECT_TRUE(parse_model("conv3x3-8,relu,bn,fc").layers[0].bias);
  EXPECT_THROW(parse_model("res8-x"), UsageError);
  EXPECT_THROW(parse_model("drop100,fc"), UsageError);
  EXPECT_THROW(model_param_tensors("conv3x3-8,res11-s2,fc", Shape{1, 8, 8}, 10), UsageError);  // odd increase
  try {
    model_param_tensors("conv3x3-8,res4,fc", Shape{1, 8, 8}, 10);
    FAIL() << "a narrowing option-A block was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("-proj"), std::string::npos) << e.what();
  }
  const std::string path = ::testing::TempDir() + "/res.json";
  std::ofstream(path) << R"({"layers": ["conv3x3-8", {"type": "bn"}, "relu",
      {"type": "res", "out": 16, "stride": 2, "projection": true}, {"type": "dropout", "p": 0.25},
      {"type": "gap"}, "fc"]})";
  EXPECT_EQ(parse_model(path).description(), "conv3x3-8,bn,relu,res16-s2-proj,drop25,gap,fc");
}

}  // namespace
}  // namespace adasync
