// The settings the config and the engine share: the variants, the AdaSync
// rules, the optimizer's and the learning rate's settings, each with its
// parsing or validation. The config holds them; the engine's parts take them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace adasync {

enum class Variant { Sync, KSync, KBatchSync, Async, KAsync, KBatchAsync };
Variant parse_variant(const std::string& s);  // throws UsageError
const char* to_string(Variant v);
bool has_k(Variant v);           // K is a free parameter
bool is_synchronous(Variant v);  // zero staleness, cancellation on update

// Auto: the default rule (default_ada_rule), resolved when the run starts.
enum class AdaRule { Auto, Sqrt, OrderStat, Runtime, Plateau, RuntimePlateau, Goodput };
AdaRule parse_ada_rule(const std::string& s);  // throws UsageError naming --adasync-rule
// The rule `--adasync-rule auto` takes for a variant (README: why).
AdaRule default_ada_rule(Variant v);
// T_0 when --schedule-every is not given: the ratio rules decide every
// budget/20 (10 s without a budget); the plateau rule, whose windows are
// counted in updates, checks every budget/100 (1 s).
double default_decision_interval(AdaRule r, double budget);
const char* to_string(AdaRule r);

struct OptimizerConfig {
  std::string name = "sgd";  // sgd (alias momentum), adam, amsgrad
  double momentum = 0.9;     // sgd only; 0 = plain SGD (the trainer resolves "auto" before this)
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool bias_correction = true;
  double weight_decay = 0;
  bool no_decay_bn = false;  // no weight decay on biases and batch-norm affine terms
};

// Throws UsageError for an unknown name or out-of-range hyper-parameter.
void validate(const OptimizerConfig& c);

struct LrConfig {
  std::string rule = "const";       // const | staleness | distance
  double lr = 0.05;                 // eta (const, staleness) or eta_max (distance)
  double c = 0.0;                   // C for distance (> 0 required)
  std::string distance = "sketch";  // exact | sketch
  size_t sketch_buckets = 4096;
  // The schedule over the run, as a multiplier of lr at `epoch` (epochs of
  // counted samples): const; step (times gamma at each milestone passed);
  // cosine (from 1 to 0 over total_epochs, PyTorch's CosineAnnealingLR);
  // each times a linear warm-up over the first warmup epochs.
  std::string schedule = "const";  // const | step | cosine
  std::vector<double> milestones;
  double gamma = 0.1;
  double total_epochs = 0;
  double warmup = 0;
  double grads_per_epoch = 0;  // counted gradients in an epoch (train size / batch); 0: no schedule
};

void validate(const LrConfig& c);

}  // namespace adasync
