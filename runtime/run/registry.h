// The state registry: each part of a run declares its checkpoint state once,
// under a name, as a type that writes and reads itself (nlohmann's type
// macros). A checkpoint writes every entry into its header under its name
// (and the arrays an entry keeps beside it); a resume reads each back, and a
// required entry missing from the header is named (an optional one, added
// after the format, is left as set up).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "runtime/checkpoint.h"

namespace adasync {

class StateRegistry {
 public:
  enum class Presence { Required, Optional };
  // An entry of type T: get() when a checkpoint is taken, set() on resume.
  template <class T>
  void add(std::string name, std::function<T()> get, std::function<void(const T&)> set,
           Presence p = Presence::Required) {
    entries_.push_back(Entry{std::move(name), [get](Checkpoint&) { return nlohmann::json(get()); },
                             [set](const nlohmann::json& j, const Checkpoint&) { set(j.get<T>()); }, p});
  }
  // An entry that also keeps arrays in the checkpoint: save() writes them and
  // returns the header entry; restore() reads both.
  void add_with_arrays(std::string name, std::function<nlohmann::json(Checkpoint&)> save,
                       std::function<void(const nlohmann::json&, const Checkpoint&)> restore) {
    entries_.push_back(Entry{std::move(name), std::move(save), std::move(restore), Presence::Required});
  }

  // Every entry into `c` (header and arrays).
  void save(Checkpoint& c) const {
    for (const Entry& e : entries_) c.header[e.name] = e.save(c);
  }
  // Every entry from `c`, in the order they were added. A required entry
  // missing is a CheckpointError naming it; a malformed one throws nlohmann's
  // exception.
  void restore(const Checkpoint& c) const {
    for (const Entry& e : entries_) {
      if (c.header.contains(e.name))
        e.restore(c.header.at(e.name), c);
      else if (e.presence == Presence::Required)
        throw CheckpointError("no '" + e.name + "' state in the header");
    }
  }

 private:
  struct Entry {
    std::string name;
    std::function<nlohmann::json(Checkpoint&)> save;
    std::function<void(const nlohmann::json&, const Checkpoint&)> restore;
    Presence presence;
  };
  std::vector<Entry> entries_;
};

}  // namespace adasync
