#include "runtime/run/model_io.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "models/safetensors.h"
#include "runtime/input_file.h"
#include "runtime/checkpoint.h"
#include "runtime/output.h"

#ifndef ADASYNC_VERSION
#define ADASYNC_VERSION "unknown"
#endif

namespace adasync {
namespace fs = std::filesystem;

namespace {
Shape input_of(const DataSplit& d) { return Shape{d.train.c, d.train.h, d.train.w}; }

// Floats as JSON numbers: shortest text that reads back to the same float.
std::string float_list(const std::vector<float>& v) {
  nlohmann::json j = nlohmann::json::array();
  for (float x : v) j.push_back(x);
  return j.dump();
}
}  // namespace

std::map<std::string, std::string> model_file_metadata(const std::string& model, const std::string& dataset,
                                                       const DataSplit& data, const nlohmann::json& settings,
                                                       int64_t updates) {
  const Shape in = input_of(data);
  return {{"format", "pt"},
          {"model", model},
          {"description", parse_model(model).description()},
          {"input_shape", nlohmann::json{in.c, in.h, in.w}.dump()},
          {"classes", std::to_string(data.train.classes)},
          {"dataset", dataset},
          {"normalization_mean", float_list(data.mean)},
          {"normalization_std", float_list(data.stddev)},
          {"normalization", "per channel: (x - mean) / std, x the raw value (pixels scaled to [0, 1])"},
          {"adasync_version", ADASYNC_VERSION},
          {"settings", settings.dump()},
          {"updates", std::to_string(updates)}};
}

void save_model_file(const std::string& path, const std::string& model, const std::string& dataset,
                     const DataSplit& data, const std::vector<float>& params, const nlohmann::json& settings,
                     int64_t updates) {
  const auto tensors = model_param_tensors(model, input_of(data), data.train.classes);
  const size_t n = tensors.empty() ? 0 : tensors.back().offset + tensors.back().count;
  if (params.size() != n)
    throw UsageError("--save-model " + path + ": model '" + model + "' holds " + std::to_string(n) +
                     " parameters, found " + std::to_string(params.size()));
  const std::string bytes =
      encode_safetensors(tensors, params.data(), model_file_metadata(model, dataset, data, settings, updates));
  write_file_atomic(path, bytes, "--save-model");
}

std::vector<float> load_model_file(const std::string& path, const std::string& model, const DataSplit& data,
                                   const std::string& flag) {
  const auto tensors = model_param_tensors(model, input_of(data), data.train.classes);
  const std::string what = flag + " " + path;
  // Bounded: the length field, then the header it gives, and the data only
  // when its size is the model's (a valid file for this model is exactly
  // 8 + header + the tensors' bytes), so no file makes us read more.
  uint64_t size = 0;
  const int fd = open_regular_input(path, what, &size);
  std::vector<unsigned char> bytes;
  auto read_to = [&](uint64_t n) {
    const size_t have = bytes.size();
    bytes.resize(size_t(n));
    for (size_t at = have; at < n;) {
      const ssize_t got = ::pread(fd, bytes.data() + at, n - at, off_t(at));
      if (got <= 0) {
        throw UsageError(what + ": cannot read byte " + std::to_string(at) + " of " + std::to_string(size));
      }
      at += size_t(got);
    }
  };
  const std::string for_model = what + " (model '" + model + "')";
  std::vector<float> params;
  try {
    read_to(std::min<uint64_t>(size, 8));
    read_to(std::min<uint64_t>(size, safetensors_header_end(bytes.data(), bytes.size())));
    // The header and the model's tensors agree (then the data is exactly the model's size) before the data is read.
    check_model_tensors(decode_safetensors_header(bytes.data(), bytes.size(), size, what), tensors, for_model);
    read_to(size);
    params = read_model_params(decode_safetensors(bytes.data(), bytes.size(), what), tensors, for_model);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  for (const auto& t : tensors)
    for (size_t i = 0; i < t.count; ++i)
      if (!std::isfinite(params[t.offset + i]))
        throw UsageError(what + ": tensor '" + t.name + "' holds " + std::to_string(params[t.offset + i]) +
                         " at index " + std::to_string(i) + "; expected finite values");
  return params;
}

std::string export_checkpoint(const std::string& checkpoint, const std::string& out) {
  Checkpoint c;
  try {
    c = load_checkpoint(checkpoint);
  } catch (const CheckpointError& e) {
    throw UsageError(std::string("--export: ") + e.what());
  }
  std::string model, dataset, data_dir;
  uint64_t seed = 0;
  int64_t version = 0;
  try {
    const auto& cfg = c.header.at("config");
    model = cfg.at("model").get<std::string>();
    dataset = cfg.at("dataset").get<std::string>();
    data_dir = cfg.value("data_dir", std::string());
    seed = cfg.at("seed").get<uint64_t>();
    version = c.header.at("version").get<int64_t>();
  } catch (const std::exception& e) {
    throw UsageError("--export " + checkpoint + ": the checkpoint's header lacks a setting: " + e.what());
  }
  std::vector<float> params;
  try {
    params = c.floats("params");
  } catch (const CheckpointError& e) {
    throw UsageError("--export " + checkpoint + ": " + e.what());
  }
  // The dataset gives the input shape and the normalisation (its statistics
  // come from the training split, so they are the run's).
  const DataSplit data = load_dataset(dataset, data_dir, seed);
  save_model_file(out, model, dataset, data, params, c.header.at("config"), version);
  return "exported " + checkpoint + " (" + model + ", update " + std::to_string(version) + ", " +
         std::to_string(params.size()) + " parameters) to " + out;
}

}  // namespace adasync
