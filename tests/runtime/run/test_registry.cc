// The state registry: every entry written under its name and read back
// through a checkpoint's bytes; a required entry missing is named, an
// optional one left as set up; NaN survives JSON as null.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/engine/policy.h"
#include "runtime/run/registry.h"
#include "runtime/run/reporter.h"
#include "runtime/run/supervisor.h"

namespace adasync {
namespace {

struct Parts {
  SupervisorState sup{2.5, 7.0, 40, 100};
  ReporterState rep;
  std::string id = "run-1";
  std::vector<float> arr{1.f, -2.f, 3.5f};
};

StateRegistry registry_of(Parts& p) {
  StateRegistry g;
  g.add<std::string>(
      "run_id", [&p] { return p.id; }, [&p](const std::string& s) { p.id = s; }, StateRegistry::Presence::Optional);
  g.add<SupervisorState>(
      "supervisor", [&p] { return p.sup; }, [&p](const SupervisorState& s) { p.sup = s; });
  g.add<ReporterState>(
      "reporter", [&p] { return p.rep; }, [&p](const ReporterState& s) { p.rep = s; });
  g.add_with_arrays(
      "arrays",
      [&p](Checkpoint& c) {
        c.put_floats("values", p.arr.data(), p.arr.size());
        return nlohmann::json(p.arr.size());
      },
      [&p](const nlohmann::json& j, const Checkpoint& c) {
        p.arr = c.floats("values");
        EXPECT_EQ(j.get<size_t>(), p.arr.size());
      });
  return g;
}

TEST(StateRegistry, EveryEntryRoundTripsThroughACheckpointUnderItsName) {
  Parts a;
  a.rep.win_loss_sum = NAN;  // a window that saw a non-finite loss
  a.rep.last_loss = 0.25;
  a.rep.win_stale_max = 9;
  a.rep.k_changes.push_back(KChange(1, 2, 3.5, NAN, 0.7, "sqrt rule, F0/Ft = 4", "sqrt"));
  Checkpoint c;
  registry_of(a).save(c);
  for (const char* name : {"run_id", "supervisor", "reporter", "arrays"}) EXPECT_TRUE(c.header.contains(name)) << name;
  const std::vector<unsigned char> bytes = encode_checkpoint(c);
  const Checkpoint back = decode_checkpoint(bytes.data(), bytes.size(), "test");
  EXPECT_TRUE(back.header["reporter"]["win_loss_sum"].is_null());  // as written

  Parts b;
  b.id = "other";
  b.sup = SupervisorState{};
  b.arr.clear();
  registry_of(b).restore(back);
  EXPECT_EQ(b.id, "run-1");
  EXPECT_EQ(b.sup.next_eval_time, 2.5);
  EXPECT_EQ(b.sup.next_ckpt_time, 7.0);
  EXPECT_EQ(b.sup.next_eval_update, 40);
  EXPECT_EQ(b.sup.next_ckpt_update, 100);
  EXPECT_TRUE(std::isnan(b.rep.win_loss_sum));
  EXPECT_EQ(double(b.rep.last_loss), 0.25);
  EXPECT_EQ(b.rep.win_stale_max, 9);
  ASSERT_EQ(b.rep.k_changes.size(), 1u);
  EXPECT_EQ(b.rep.k_changes[0].k, 2);
  EXPECT_TRUE(std::isnan(b.rep.k_changes[0].loss_start));
  EXPECT_EQ(b.rep.k_changes[0].loss_now, 0.7);
  EXPECT_EQ(b.rep.k_changes[0].rule, "sqrt");
  EXPECT_EQ(b.arr, a.arr);
}

TEST(StateRegistry, AMissingRequiredEntryIsNamedAndAnOptionalOneLeftAsSetUp) {
  Parts a;
  Checkpoint c;
  registry_of(a).save(c);
  Checkpoint no_id = c;
  no_id.header.erase("run_id");  // older checkpoints have none
  Parts b;
  b.id = "mine";
  registry_of(b).restore(no_id);
  EXPECT_EQ(b.id, "mine");
  Checkpoint no_sup = c;
  no_sup.header.erase("supervisor");
  try {
    registry_of(b).restore(no_sup);
    ADD_FAILURE() << "restored without the supervisor's state";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'supervisor'"), std::string::npos) << e.what();
  }
  Checkpoint bad = c;
  bad.header["supervisor"]["next_eval_update"] = "soon";
  EXPECT_THROW(registry_of(b).restore(bad), nlohmann::json::exception);
}

// The policy's state: NaN in the schedule's state survives; keys added after
// the format (the window's staleness, the estimators) default when absent,
// the format's own are required.
TEST(StateRegistry, PolicyStateReadsNaNAndOlderHeaders) {
  PolicyState s;
  s.schedule = {1.0, NAN, 3.0};
  s.observed_times = {0.5, 0.25};
  s.decided_counted = 12;
  const nlohmann::json j = nlohmann::json::parse(nlohmann::json(s).dump());
  EXPECT_TRUE(j["schedule"][1].is_null());
  const PolicyState back = j.get<PolicyState>();
  EXPECT_TRUE(std::isnan(back.schedule[1]));
  EXPECT_EQ(back.schedule[2], 3.0);
  EXPECT_EQ(back.decided_counted, 12);
  nlohmann::json older = j;
  for (const char* k : {"decided_staleness_sum", "decided_counted", "noise", "secant", "guard"}) older.erase(k);
  const PolicyState o = older.get<PolicyState>();
  EXPECT_EQ(o.decided_counted, 0);
  EXPECT_TRUE(o.noise.empty());
  EXPECT_EQ(o.observed_times, s.observed_times);
  // The keys every format wrote are required: a header without one is refused, naming it.
  for (const char* k : {"schedule", "start_loss_sum", "start_loss_n", "sched_loss_sum", "sched_loss_sq", "sched_loss_n",
                        "sched_updates", "observed_times"}) {
    nlohmann::json missing = j;
    missing.erase(k);
    try {
      (void)missing.get<PolicyState>();
      ADD_FAILURE() << "a policy state without '" << k << "' was read";
    } catch (const nlohmann::json::exception& e) {
      EXPECT_NE(std::string(e.what()).find(k), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace adasync
