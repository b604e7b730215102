// Output files written atomically: lines go to PATH.tmp (flushed as they are
// written, so a crash leaves the partial record there) and commit() renames
// it over PATH after an fsync. An existing PATH is never clobbered by a run
// that does not finish.
#pragma once

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace adasync {

class AtomicLines {
 public:
  AtomicLines() = default;
  explicit AtomicLines(const std::string& path);  // throws UsageError when the file cannot be created
  ~AtomicLines();
  AtomicLines(const AtomicLines&) = delete;
  AtomicLines& operator=(const AtomicLines&) = delete;

  bool open() const { return f_ != nullptr; }
  const std::string& path() const { return path_; }
  void write(const nlohmann::json& j);
  void write_line(const std::string& line);
  // fsync, close and rename PATH.tmp to PATH.
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

// Writes `data` to `path` atomically (temp file, fsync, rename, fsync dir).
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace adasync
