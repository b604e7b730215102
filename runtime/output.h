// Everything a run writes goes through here, so that nothing already written
// is lost or clobbered:
//   - check_output, at start-up: the target's directory exists and is
//     writable; what is at the path is nothing, a regular file, or a symlink
//     to one (written through: the link stays, the file it names is
//     replaced); a directory, FIFO, device or socket is refused.
//   - the bytes go to a unique temporary beside the file (mkstemp,
//     FILE.tmp.XXXXXX), every write and the fsync checked, then rename over
//     the file: the previous complete file stays until the new one is whole.
//   - a failed write (ENOSPC, EIO, RLIMIT_FSIZE) is one OutputError naming
//     the file, thrown at once; the temporary is removed.
// refuse_shared_paths: two outputs, or an output and an input, that are the
// same file (after symlinks and hard links) are refused at start-up.
#pragma once

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/context.h"

namespace adasync {

// A write that failed: exit status 3.
class OutputError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 3; }
};

// The file that writing `path` replaces (symlinks followed); UsageError
// naming `flag` when it cannot be written (see above).
std::string check_output(const std::string& path, const std::string& flag);

// A path given to a flag: outputs are checked against each other and against
// the inputs. `dir_of_outputs` marks a directory whose checkpoint files
// (ckpt-*.bin, .lock) no other output may be.
struct NamedPath {
  std::string flag, path;
  bool directory = false;
};
void refuse_shared_paths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs);

// A stream of lines (metrics, trace) written to a temporary and renamed over
// the file by commit(). Each line is flushed as written; the first failed
// write stops the stream (later writes do nothing), removes the temporary and
// calls on_error once with the message; commit() then throws it.
class AtomicLines {
 public:
  AtomicLines() = default;
  AtomicLines(const std::string& path, const std::string& flag);  // UsageError when it cannot be created
  ~AtomicLines();
  AtomicLines(const AtomicLines&) = delete;
  AtomicLines& operator=(const AtomicLines&) = delete;

  bool open() const { return f_ != nullptr; }
  const std::string& path() const { return path_; }
  void on_error(std::function<void(const std::string&)> f) { on_error_ = std::move(f); }
  void write(const nlohmann::json& j);
  // One whole line per call, from any thread (never two objects on one line).
  void write_line(const std::string& line);
  // fsync, close and rename the temporary over the file; OutputError if any
  // write failed (the previous file, if any, is then intact).
  void commit();
  const std::string& error() const { return error_; }

 private:
  void fail(const std::string& what);  // with mu_ held
  std::string path_, file_, tmp_, flag_, error_;
  std::FILE* f_ = nullptr;
  std::function<void(const std::string&)> on_error_;
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

// What a resumed run's stream continues: the lines of the file a write to
// `path` replaces, or of one of its temporaries (FILE.tmp.XXXXXX, what a
// killed run leaves), whose first line `belongs` accepts, up to and including
// the last line `is_end` accepts, and of the lines after it those `keep`
// accepts. The file is tried first, then the temporaries, newest first; none
// found: no lines. Unreadable or malformed candidates are passed over (the
// run then writes the file anew, as before).
struct EarlierLines {
  std::vector<std::string> lines;
  std::string source;      // the file read
  bool temporary = false;  // a killed run's temporary: the committed file replaces it
};
using LineTest = std::function<bool(const nlohmann::json&)>;
EarlierLines earlier_lines(const std::string& path, const LineTest& belongs, const LineTest& is_end,
                           const LineTest& keep);

// Writes `data` to `path` atomically (see above); OutputError naming `flag`
// and the file when any step fails.
void write_file_atomic(const std::string& path, const std::string& data, const std::string& flag = "");

// The suffix of write_file_atomic's temporaries: FILE + ".tmp." + 6 characters.
bool is_temporary_of(const std::string& name, const std::string& file_name);

}  // namespace adasync
