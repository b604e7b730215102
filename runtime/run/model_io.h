// Trained models in and out of the trainer, as safetensors (models/safetensors.h).
//
//   --save-model FILE   the final parameters (Trainer::run)
//   --init-from FILE    start from a file's parameters instead of the seed's
//   --export CKPT       with --save-model: the parameters of a checkpoint
//
// A file's tensors are named and shaped as PyTorch names and shapes the same
// architecture; its __metadata__ holds strings a reader needs to use it
// without adasync: the model and its layer list, the input shape and classes,
// the dataset and its normalisation (per-channel mean and standard deviation
// of the training split, applied as (x - mean) / std after scaling pixels to
// [0, 1]), the adasync version, the run's settings and the update count.
// Writes are atomic (temp file, fsync, rename). Every bad input is one
// UsageError naming the flag and file, what was expected and what was found.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "datasets/dataset.h"

namespace adasync {

std::map<std::string, std::string> model_file_metadata(const std::string& model, const std::string& dataset,
                                                       const DataSplit& data, const nlohmann::json& settings,
                                                       int64_t updates);

// Writes `params` (the flat buffer of model `model` for `data`'s shape) to `path`.
void save_model_file(const std::string& path, const std::string& model, const std::string& dataset,
                     const DataSplit& data, const std::vector<float>& params, const nlohmann::json& settings,
                     int64_t updates);

// The flat parameters in `path` for model `model` on `data`'s shape; `flag`
// names the option in messages.
std::vector<float> load_model_file(const std::string& path, const std::string& model, const DataSplit& data,
                                   const std::string& flag = "--init-from");

// trainer --export CKPT --save-model FILE. The checkpoint's settings name the
// model and the dataset (loaded for its shape and normalisation). Returns a
// one-line description of what was written.
std::string export_checkpoint(const std::string& checkpoint, const std::string& out);


}  // namespace adasync
