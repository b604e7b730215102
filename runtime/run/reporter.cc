#include "runtime/run/reporter.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runtime/drivers/worker.h"
#include "runtime/engine/policy.h"
#include "runtime/run/trace.h"

namespace adasync {

namespace {
std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
}  // namespace

namespace {
// tqdm's style: m:ss, or h:mm:ss from an hour.
std::string clock_text(double s) {
  const long long t = static_cast<long long>(std::llround(std::max(0.0, std::min(s, 3.6e8))));
  char b[32];
  if (t >= 3600) std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(b, sizeof b, "%lld:%02lld", t / 60, t % 60);
  return b;
}

// "  Bnoise 1.2e+03" once the noise scale is measured (AdaSync runs), else "".
std::string noise_text(double b) {
  if (std::isnan(b)) return "";
  return std::isinf(b) ? std::string("  Bnoise inf") : fmt("  Bnoise %.2g", b);
}

// "  37% eta 1:23", "  37%" before an estimate, "" without a limit.
std::string done_text(double fraction, double eta) {
  if (fraction < 0) return "";
  std::string s = fmt("  %3.0f%%", 100 * fraction);
  if (eta >= 0) s += " eta " + clock_text(eta);
  return s;
}
}  // namespace

Reporter::Reporter(const TrainConfig& cfg, const WallTimer* wall) : cfg_(cfg), wall_(wall) {
  tty_ = cfg_.progress == Progress::Auto && isatty(fileno(stdout));
}

void Reporter::open(const nlohmann::json& start, const nlohmann::json& trace_header, double now) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    start_fraction_ = std::max(0.0, done(stats_.updates, stats_.counted * cfg_.batch, now).fraction);
    start_wall_ = 0;  // the wall timer starts with training, after open()
  }
  auto create = [this](const std::string& path, const char* flag) {
    auto f = std::make_unique<AtomicLines>(path, flag);
    f->on_error(on_output_error_);
    return f;
  };
  EarlierLines earlier;
  if (!cfg_.metrics.empty() && start.contains("resumed_version") && start.contains("run_id")) {
    // The run's records up to its checkpoint's, and the evaluations of
    // versions up to it that finished after it (on the real clock an
    // evaluation of the checkpoint's version is written after it).
    const nlohmann::json id = start.at("run_id");
    const int64_t version = start.at("resumed_version").get<int64_t>();
    auto event = [](const nlohmann::json& j) { return j.is_object() ? j.value("event", "") : std::string(); };
    auto updates = [](const nlohmann::json& j) {
      const auto it = j.find("updates");
      return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t(-1);
    };
    earlier = earlier_lines(
        cfg_.metrics, [&](const nlohmann::json& j) { return event(j) == "start" && j.value("run_id", "") == id; },
        [&](const nlohmann::json& j) { return event(j) == "checkpoint" && updates(j) == version; },
        [&](const nlohmann::json& j) { return event(j) == "eval" && updates(j) >= 0 && updates(j) <= version; });
    for (const std::string& line : earlier.lines) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (event(j) == "eval") continued_evals_to_ = std::max(continued_evals_to_, updates(j));
    }
  }
  if (!cfg_.metrics.empty()) metrics_ = create(cfg_.metrics, "--metrics");
  if (!cfg_.trace.empty()) {
    trace_ = create(cfg_.trace, "--trace");
    trace_->write(trace_header);
  }
  if (!metrics_) return;
  for (const std::string& line : earlier.lines) metrics_->write_line(line);
  if (earlier.temporary) continued_temporary_ = earlier.source;
  if (!earlier.lines.empty() && cfg_.progress != Progress::None)
    std::printf("metrics: %s continues the run's %zu records up to its checkpoint at update %s (from %s)\n",
                cfg_.metrics.c_str(), earlier.lines.size(), start.at("resumed_version").dump().c_str(),
                earlier.source.c_str());
  metrics_->write(start);
}

void Reporter::commit(int64_t trace_updates, uint64_t checksum) {
  std::lock_guard<std::mutex> lk(mu_);
  std::string error;
  for (AtomicLines* f : {metrics_.get(), trace_.get()}) {
    if (f == nullptr) continue;
    if (f == trace_.get()) f->write(trace_footer(trace_updates, trace_entries_, checksum_hex(checksum)));
    try {
      f->commit();  // both tried: one failed file does not cost the other
      // The killed run's temporary this file continued: what it held up to
      // the checkpoint is in the file now; the rest, this run did again.
      if (f == metrics_.get() && !continued_temporary_.empty()) std::remove(continued_temporary_.c_str());
    } catch (const OutputError& e) {
      if (error.empty()) error = e.what();
    }
  }
  if (!error.empty()) throw OutputError(error);
}

void Reporter::on_push(const PushEvent& e) {
  if (!e.result.counted) return;
  std::lock_guard<std::mutex> lk(mu_);
  win_loss_sum_ += e.loss;
  ++win_loss_n_;
}

void Reporter::on_update(const UpdateEvent& e) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = e.stats;
    k_ = e.k;
    lr_ = e.lr;
    b_noise_ = e.b_noise;
    if (first_update_time_ < 0) {
      first_update_time_ = e.now;
      first_update_samples_ = stats_.counted * cfg_.batch;
    }
    for (const Applied& a : e.update.applied) {
      win_stale_sum_ += double(a.staleness);
      ++win_stale_n_;
      win_stale_max_ = std::max(win_stale_max_, a.staleness);
    }
    if (trace_) {
      for (const Applied& a : e.update.applied) {
        TraceEntry t{a.time, a.worker, a.tau, e.update.snapshot->version, a.staleness, a.batch, a.weight, e.lr};
        trace_->write(to_json(t));
        ++trace_entries_;
      }
    }
  }
  if (e.k_change) k_change(*e.k_change, e.update.snapshot->version);
  if (e.k_kept != nullptr && *e.k_kept) k_kept(**e.k_kept, e.update.snapshot->version);
}

void Reporter::k_kept(const KChange& ch, int64_t version) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!metrics_) return;
  nlohmann::json j{{"event", "k_decision"}, {"time", ch.time}, {"updates", version}, {"rule", ch.rule},
                   {"k", ch.k},          {"reason", ch.reason}};
  if (std::isfinite(b_noise_)) j["b_noise"] = b_noise_;
  if (std::isfinite(ch.l_eta)) j["l_eta"] = ch.l_eta;
  nlohmann::json r = nlohmann::json::array();
  for (double x : ch.rates) r.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json());
  j["rates"] = r;
  metrics_->write(j);
}

void Reporter::k_change(const KChange& ch, int64_t version) {
  std::lock_guard<std::mutex> lk(mu_);
  k_changes_.push_back(ch);
  k_ = ch.k;
  if (metrics_) {
    nlohmann::json j{{"event", "k_change"},
                     {"time", ch.time},
                     {"wall", wall_->seconds()},
                     {"updates", version},
                     {"rule", ch.rule},
                     {"k_prev", ch.k_prev},
                     {"k", ch.k},
                     {"loss_start", ch.loss_start},
                     {"loss_now", ch.loss_now},
                     {"loss_ratio", ch.loss_start / ch.loss_now},
                     {"reason", ch.reason}};
    if (std::isfinite(b_noise_)) j["b_noise"] = b_noise_;
    if (std::isfinite(ch.l_eta)) j["l_eta"] = ch.l_eta;
    if (!ch.rates.empty()) {
      nlohmann::json r = nlohmann::json::array();
      for (double x : ch.rates) r.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json());
      j["rates"] = r;  // predicted progress per second of K = 1, 2, ...
    }
    metrics_->write(j);
  }
  if (cfg_.progress != Progress::None) {
    std::printf("%s[%8.2fs] K %d -> %d (%s", tty_ ? "\r" : "", ch.time, ch.k_prev, ch.k, ch.reason.c_str());
    if (std::isfinite(ch.loss_start)) std::printf(": loss %.4f -> %.4f", ch.loss_start, ch.loss_now);
    std::printf(")\n");
    std::fflush(stdout);
  }
}

void Reporter::on_worker_failed(int w, const std::string& what, int left, double now) {
  std::lock_guard<std::mutex> lk(mu_);
  failed_workers_.push_back(w);
  if (metrics_) metrics_->write(nlohmann::json{{"event", "worker_failed"}, {"time", now}, {"worker", w}, {"error", what}});
  std::fprintf(stderr, "%strainer: worker %d failed: %s; %s\n", tty_ ? "\n" : "", w, what.c_str(),
               left > 0 ? ("continuing with " + std::to_string(left) + " worker(s)").c_str() : "no worker left, stopping");
}

void Reporter::on_rank_lost(int rank, int first, int last, const std::string& what, double now) {
  std::lock_guard<std::mutex> lk(mu_);
  lost_ranks_.push_back(rank);
  std::vector<int> workers;
  for (int w = first; w <= last; ++w) workers.push_back(w);
  if (metrics_)
    metrics_->write(nlohmann::json{
        {"event", "rank_lost"}, {"time", now}, {"rank", rank}, {"workers", workers}, {"error", what}});
  std::fprintf(stderr, "%strainer: worker rank %d (workers %d-%d) lost: %s\n", tty_ ? "\n" : "", rank, first, last,
               what.c_str());
}

void Reporter::count_steps(int64_t updates, int64_t counted, int k, double now, bool first_at_now) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_.updates = updates;
  stats_.counted = counted;
  stats_.pushes = counted;
  k_ = k;
  if (first_at_now && first_update_time_ < 0) {
    first_update_time_ = now;
    first_update_samples_ = counted * cfg_.batch;
  }
}

void Reporter::add_losses(const std::vector<float>& losses) {
  std::lock_guard<std::mutex> lk(mu_);
  for (float l : losses) {
    win_loss_sum_ += l;
    ++win_loss_n_;
  }
}

void Reporter::set_stats(const AggregatorStats& s, int k) {
  std::lock_guard<std::mutex> lk(mu_);
  stats_ = s;
  k_ = k;
}

int64_t Reporter::counted_samples() {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_.counted * cfg_.batch;
}

Reporter::Done Reporter::done(int64_t updates, int64_t samples, double now) {
  Done d;
  auto at_least = [&d](double f) { d.fraction = std::max(d.fraction, std::min(1.0, std::max(0.0, f))); };
  if (cfg_.max_updates > 0) at_least(double(updates) / double(cfg_.max_updates));
  if (max_samples_ > 0) at_least(double(samples) / double(max_samples_));
  if (cfg_.time_budget > 0) at_least(now / cfg_.time_budget);
  if (d.fraction < 0) return d;
  const double wall = wall_->seconds();
  if (start_fraction_ < 0) return d;  // before open()
  if (d.fraction >= 1) d.eta = 0;
  else if (d.fraction > start_fraction_ && wall > start_wall_)
    d.eta = (wall - start_wall_) * (1 - d.fraction) / (d.fraction - start_fraction_);
  return d;
}

void Reporter::evaluated(const EvalResult& ev, int64_t version, double now, bool final, const nlohmann::json& extra,
                         int64_t samples) {
  std::lock_guard<std::mutex> lk(mu_);
  const Done dn = done(version, samples, now);
  const AggregatorStats& st = stats_;
  const double loss = win_loss_n_ ? win_loss_sum_ / double(win_loss_n_) : last_loss_;
  last_loss_ = loss;
  last_acc_ = ev.accuracy;
  const double stale_mean = win_stale_n_ ? win_stale_sum_ / double(win_stale_n_) : 0.0;
  nlohmann::json j{{"event", final ? "final" : "eval"},
                   {"time", now},
                   {"wall", wall_->seconds()},
                   {"updates", version},
                   {"samples", samples},
                   {"loss", loss},
                   {"test_loss", ev.loss},
                   {"test_accuracy", ev.accuracy},
                   {"test_samples", ev.samples},
                   {"samples_per_s", now > 0 ? double(samples) / now : 0.0},
                   {"k", k_},
                   {"lr", lr_},
                   {"staleness_mean", stale_mean},
                   {"staleness_max", win_stale_max_},
                   {"dropped", st.dropped()},
                   {"dropped_stale", st.dropped_stale},
                   {"dropped_bound", st.dropped_bound},
                   {"dropped_nonfinite", st.dropped_nonfinite},
                   {"cancelled", st.cancelled}};
  if (version > last_eval_updates_ && now > last_eval_time_) {
    j["time_per_update"] = (now - last_eval_time_) / double(version - last_eval_updates_);
    last_eval_time_ = now;
    last_eval_updates_ = version;
  }
  if (dn.fraction >= 0) j["fraction_done"] = dn.fraction;
  if (dn.eta >= 0) j["eta_s"] = dn.eta;
  if (std::isfinite(b_noise_)) j["b_noise"] = b_noise_;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  // An evaluation the continued records already hold (the checkpoint's version) is not written twice.
  if (metrics_ && (final || version > continued_evals_to_)) metrics_->write(j);
  if (cfg_.progress != Progress::None) {
    std::printf("%s[%8.2fs] upd %7lld  samples %9lld  %8.0f samp/s  K %d%s  loss %.4f  test acc %6.2f%%  stale %.2f/%lld%s\n",
                tty_ ? "\r" : "", now, static_cast<long long>(version), static_cast<long long>(samples),
                now > 0 ? double(samples) / now : 0.0, k_, noise_text(b_noise_).c_str(), loss, 100 * ev.accuracy,
                stale_mean, static_cast<long long>(win_stale_max_), done_text(dn.fraction, final ? -1 : dn.eta).c_str());
    std::fflush(stdout);
  }
  win_loss_sum_ = 0;
  win_loss_n_ = 0;
  win_stale_sum_ = 0;
  win_stale_n_ = 0;
  win_stale_max_ = 0;
}

void Reporter::checkpoint_written(double now, int64_t version, const std::string& path) {
  std::lock_guard<std::mutex> lk(mu_);
  if (metrics_)
    metrics_->write(nlohmann::json{{"event", "checkpoint"}, {"time", now}, {"updates", version}, {"path", path}});
}

void Reporter::watchdog(int w, double idle, double now) {
  std::lock_guard<std::mutex> lk(mu_);
  ++watchdog_alarms_;
  std::fprintf(stderr, "%strainer: watchdog: worker %d has pushed nothing for %.1f s (limit %.1f s)\n", tty_ ? "\n" : "",
               w, idle, cfg_.watchdog);
  if (metrics_) metrics_->write(nlohmann::json{{"event", "watchdog"}, {"time", now}, {"worker", w}, {"idle", idle}});
}

void Reporter::progress(double now, bool force) {
  if (!tty_) return;
  std::lock_guard<std::mutex> lk(mu_);
  const double wall = wall_->seconds();
  if (!force && wall - last_progress_wall_ < 0.25) return;
  last_progress_wall_ = wall;
  const int64_t samples = stats_.counted * cfg_.batch;
  const double loss = win_loss_n_ ? win_loss_sum_ / double(win_loss_n_) : last_loss_;
  const Done dn = done(stats_.updates, samples, now);
  const std::string of = cfg_.max_updates > 0 ? "/" + std::to_string(cfg_.max_updates) : "";
  std::printf("\r[%8.2fs] upd %7lld%s  %8.0f samp/s  K %d%s  loss %.4f  acc %s  stale %.2f%s   ", now,
              static_cast<long long>(stats_.updates), of.c_str(), now > 0 ? double(samples) / now : 0.0, k_,
              noise_text(b_noise_).c_str(), loss,
              last_acc_ < 0 ? "  -   " : fmt("%5.2f%%", 100 * last_acc_).c_str(),
              win_stale_n_ ? win_stale_sum_ / double(win_stale_n_) : 0.0, done_text(dn.fraction, dn.eta).c_str());
  std::fflush(stdout);
}

void Reporter::line(const nlohmann::json& j) {
  std::lock_guard<std::mutex> lk(mu_);
  if (metrics_) metrics_->write(j);
}

void Reporter::summary(const nlohmann::json& j) { line(j); }

std::vector<KChange> Reporter::k_changes() {
  std::lock_guard<std::mutex> lk(mu_);
  return k_changes_;
}
std::vector<int> Reporter::lost_ranks() {
  std::lock_guard<std::mutex> lk(mu_);
  return lost_ranks_;
}

void Reporter::restore_failed(const std::vector<int>& workers) {
  std::lock_guard<std::mutex> lk(mu_);
  failed_workers_.insert(failed_workers_.begin(), workers.begin(), workers.end());
}

std::vector<int> Reporter::failed_workers() {
  std::lock_guard<std::mutex> lk(mu_);
  return failed_workers_;
}
int64_t Reporter::watchdog_alarms() {
  std::lock_guard<std::mutex> lk(mu_);
  return watchdog_alarms_;
}
double Reporter::first_update_time() {
  std::lock_guard<std::mutex> lk(mu_);
  return first_update_time_;
}
int64_t Reporter::first_update_samples() {
  std::lock_guard<std::mutex> lk(mu_);
  return first_update_samples_;
}
int64_t Reporter::trace_entries() {
  std::lock_guard<std::mutex> lk(mu_);
  return trace_entries_;
}

void to_json(nlohmann::json& j, const KChange& c) {
  j = nlohmann::json::array({c.k_prev, c.k, c.time, c.loss_start, c.loss_now, c.reason, c.rule});
}
void from_json(const nlohmann::json& j, KChange& c) {
  c = KChange{j.at(0).get<int>(),          j.at(1).get<int>(),          j.at(2).get<double>(),
              j.at(3).get<Real>(),         j.at(4).get<Real>(),         j.at(5).get<std::string>(),
              j.at(6).get<std::string>()};
}

ReporterState Reporter::state() {
  std::lock_guard<std::mutex> lk(mu_);
  return ReporterState{win_loss_sum_,     last_loss_,         win_loss_n_,          win_stale_sum_, win_stale_n_,
                       win_stale_max_,    first_update_time_, first_update_samples_, k_changes_};
}

void Reporter::restore(const ReporterState& s) {
  std::lock_guard<std::mutex> lk(mu_);
  win_loss_sum_ = s.win_loss_sum, win_loss_n_ = s.win_loss_n;
  win_stale_sum_ = s.win_stale_sum, win_stale_n_ = s.win_stale_n, win_stale_max_ = s.win_stale_max;
  last_loss_ = s.last_loss;
  first_update_time_ = s.first_update_time, first_update_samples_ = s.first_update_samples;
  k_changes_ = s.k_changes;
}

}  // namespace adasync
