// Output files written atomically: lines go to PATH.tmp (flushed as they are
// written, so a crash leaves the partial record there) and commit() renames
// it over PATH after an fsync. An existing PATH is never clobbered by a run
// that does not finish.
#pragma once

#include <cstdio>
#include <mutex>
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
  // One whole line per call, from any thread (never two objects on one line).
  void write_line(const std::string& line);
  // fsync, close and rename PATH.tmp to PATH.
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  std::mutex mu_;
};

// An exclusive lock on a directory (flock on DIR/.lock, which holds the pid):
// one run per checkpoint directory. Released when destroyed.
class DirLock {
 public:
  DirLock() = default;
  // Creates DIR if needed; throws UsageError naming DIR and the holder's pid
  // when another process holds it.
  static DirLock acquire(const std::string& dir, const std::string& flag);
  DirLock(DirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DirLock& operator=(DirLock&& o) noexcept;
  ~DirLock();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Writes `data` to `path` atomically (temp file, fsync, rename, fsync dir).
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace adasync
