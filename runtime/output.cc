#include "runtime/output.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "runtime/input_file.h"

namespace adasync {

namespace {
std::string dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}
std::string base_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
void fsync_dir(const std::string& path) {
  const int fd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
std::string realpath_of(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) != nullptr ? std::string(buf) : std::string();
}
// The file a write to `path` replaces: a symlink's target, else the path.
std::string target_of(const std::string& path) {
  struct stat lst {};
  if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
    const std::string t = realpath_of(path);
    if (!t.empty()) return t;
  }
  return path;
}
// A unique temporary beside `file`: its descriptor and name.
int make_temporary(const std::string& file, std::string* name) {
  std::string tmpl = file + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd >= 0) {
    ::fchmod(fd, 0644);  // mkstemp makes 0600; outputs are for others to read
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  *name = tmpl;
  return fd;
}
}  // namespace

std::string check_output(const std::string& path, const std::string& flag) {
  if (path.empty()) throw UsageError(flag + ": expected a file name, found ''");
  const std::string what = flag + " " + path;
  std::string file = path;
  struct stat lst {};
  if (::lstat(path.c_str(), &lst) == 0) {
    if (S_ISLNK(lst.st_mode)) {
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0)
        throw UsageError(what + ": a symlink to a missing file; expected a regular file, a symlink to one, or a new name");
      if (!S_ISREG(st.st_mode))
        throw UsageError(what + ": a symlink to " + kind_of(st.st_mode) +
                         "; expected a regular file (outputs are written whole and renamed over the file)");
      file = realpath_of(path);
    } else if (S_ISDIR(lst.st_mode)) {
      throw UsageError(what + ": expected a file name, found a directory");
    } else if (!S_ISREG(lst.st_mode)) {
      throw UsageError(what + ": expected a regular file or a new name, found " + kind_of(lst.st_mode) +
                       " (outputs are written whole and renamed over the file, which would replace it)");
    }
  } else if (errno != ENOENT) {
    throw UsageError(what + ": " + std::strerror(errno));
  }
  const std::string dir = dir_of(file);
  struct stat ds {};
  if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode))
    throw UsageError(what + ": expected an existing directory '" + dir + "', found none");
  // Writable: a temporary made and removed there (permissions, a read-only
  // file system, an exhausted quota of inodes all show here, before training).
  std::string probe;
  const int fd = make_temporary(file, &probe);
  if (fd < 0) throw UsageError(what + ": cannot create a file in '" + dir + "': " + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
  return file;
}

namespace {
// Same file: (device, inode) when it exists, else the resolved directory and name.
std::string identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0)
    return "inode:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  const std::string dir = realpath_of(dir_of(path));
  return "path:" + (dir.empty() ? dir_of(path) : dir) + "/" + base_of(path);
}
bool owned_by_checkpoints(const std::string& name) {
  return name == ".lock" || (name.rfind("ckpt-", 0) == 0 && name.find(".bin") != std::string::npos);
}
}  // namespace

void refuse_shared_paths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs) {
  std::map<std::string, const NamedPath*> seen;
  for (const NamedPath& o : outputs) {
    if (o.path.empty() || o.directory) continue;
    const std::string id = identity(o.path);
    if (const auto it = seen.find(id); it != seen.end())
      throw UsageError(o.flag + " " + o.path + ": the same file as " + it->second->flag + " " + it->second->path +
                       "; each output needs a file of its own");
    seen[id] = &o;
  }
  for (const NamedPath& in : inputs) {
    if (in.path.empty() || in.directory) continue;
    if (const auto it = seen.find(identity(in.path)); it != seen.end())
      throw UsageError(it->second->flag + " " + it->second->path + ": the same file as " + in.flag + " " + in.path +
                       ", which this run reads; write the output elsewhere");
  }
  for (const NamedPath& d : outputs) {
    if (d.path.empty() || !d.directory) continue;
    const std::string dir = realpath_of(d.path);
    if (dir.empty()) continue;  // not made yet: nothing can be in it
    for (const auto& [id, o] : seen) {
      const std::string odir = realpath_of(dir_of(o->path));
      if (odir == dir && owned_by_checkpoints(base_of(o->path)))
        throw UsageError(o->flag + " " + o->path + ": a name the checkpoints of " + d.flag + " " + d.path +
                         " own (ckpt-*.bin, .lock); choose another name");
    }
  }
}

AtomicLines::AtomicLines(const std::string& path, const std::string& flag) : path_(path), flag_(flag) {
  file_ = target_of(path);
  const int fd = make_temporary(file_, &tmp_);
  if (fd < 0) throw UsageError(flag + " " + path + ": cannot create a file in '" + dir_of(file_) + "': " + std::strerror(errno));
  f_ = ::fdopen(fd, "w");
  if (f_ == nullptr) {
    ::close(fd);
    ::unlink(tmp_.c_str());
    throw UsageError(flag + " " + path + ": " + std::strerror(errno));
  }
}

AtomicLines::~AtomicLines() {
  if (f_ != nullptr) std::fclose(f_);  // not committed: the temporary stays as the partial record
}

void AtomicLines::write(const nlohmann::json& j) { write_line(j.dump()); }

void AtomicLines::fail(const std::string& what) {
  if (!error_.empty()) return;
  error_ = flag_ + " " + path_ + ": " + what + " (writing " + tmp_ + "; " +
           "the file at " + path_ + " is as it was before this run)";
  if (f_ != nullptr) std::fclose(f_);
  f_ = nullptr;
  ::unlink(tmp_.c_str());
  if (on_error_) on_error_(error_);
}

void AtomicLines::write_line(const std::string& line) {
  const std::string whole = line + '\n';
  std::lock_guard<std::mutex> lk(mu_);
  if (f_ == nullptr) return;
  errno = 0;
  if (std::fwrite(whole.data(), 1, whole.size(), f_) != whole.size() || std::fflush(f_) != 0)
    fail(std::string("cannot write: ") + std::strerror(errno ? errno : EIO));
}

void AtomicLines::commit() {
  std::lock_guard<std::mutex> lk(mu_);
  if (f_ != nullptr) {
    errno = 0;
    const bool flushed = std::fflush(f_) == 0 && ::fsync(fileno(f_)) == 0;
    const int err = errno;
    const bool closed = std::fclose(f_) == 0;
    f_ = nullptr;
    if (!flushed || !closed) {
      fail(std::string("cannot write: ") + std::strerror(err ? err : (errno ? errno : EIO)));
    } else if (std::rename(tmp_.c_str(), file_.c_str()) != 0) {
      fail("cannot rename " + tmp_ + " to " + file_ + ": " + std::strerror(errno));
    } else {
      fsync_dir(file_);
      return;
    }
  }
  if (!error_.empty()) throw OutputError(error_);
}

DirLock DirLock::acquire(const std::string& dir, const std::string& flag) {
  const int made = ::mkdir(dir.c_str(), 0755);  // an existing directory is fine
  const int mkdir_errno = errno;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    throw UsageError(flag + ": cannot create directory '" + dir + "': " +
                     std::strerror(made != 0 ? mkdir_errno : ENOENT));
  if (!S_ISDIR(st.st_mode)) throw UsageError(flag + ": expected a directory, found a file named '" + dir + "'");
  const std::string path = dir + "/.lock";
  DirLock l;
  l.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (l.fd_ < 0) throw UsageError(flag + ": cannot create '" + path + "': " + std::strerror(errno));
  if (::flock(l.fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    const ssize_t n = ::pread(l.fd_, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, size_t(n)) : "?";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    throw UsageError(flag + ": '" + dir + "' is in use by another run (pid " + pid +
                     "); wait for it to finish or choose another directory");
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(l.fd_, 0) == 0 && ::pwrite(l.fd_, me.data(), me.size(), 0) < 0) {
    // The pid is a courtesy for the message above; the lock is what counts.
  }
  return l;
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

void write_file_atomic(const std::string& path, const std::string& data, const std::string& flag) {
  const std::string file = target_of(path);
  const std::string what = (flag.empty() ? "" : flag + " ") + path;
  std::string tmp;
  const int fd = make_temporary(file, &tmp);
  if (fd < 0) throw OutputError(what + ": cannot create a file in '" + dir_of(file) + "': " + std::strerror(errno));
  auto give_up = [&](const std::string& step, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw OutputError(what + ": cannot " + step + ": " + std::strerror(err) + " (the file at " + path +
                      " is as it was)");
  };
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      give_up("write", errno);
    }
    off += size_t(w);
  }
  if (::fsync(fd) != 0) give_up("flush", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw OutputError(what + ": cannot flush: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw OutputError(what + ": cannot rename " + tmp + " to " + file + ": " + std::strerror(err));
  }
  fsync_dir(file);
}

namespace {
// The lines of `file` up to and including the last that `is_end` accepts and
// those after it that `keep` accepts, when its first line is JSON that
// `belongs` accepts; empty otherwise.
std::vector<std::string> lines_until(const std::string& file, const LineTest& belongs, const LineTest& is_end,
                                     const LineTest& keep) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return {};
  std::ifstream in(file);
  std::vector<std::string> lines;
  std::vector<char> kept;  // per line: `keep` accepts it
  size_t end = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);  // a killed run's last line may be cut
    if (j.is_discarded()) break;
    if (lines.empty() && !belongs(j)) return {};
    lines.push_back(std::move(line));
    kept.push_back(keep(j) ? 1 : 0);
    if (is_end(j)) end = lines.size();
  }
  if (end == 0) return {};
  size_t out = end;
  for (size_t i = end; i < lines.size(); ++i)
    if (kept[i]) lines[out++] = std::move(lines[i]);
  lines.resize(out);
  return lines;
}
}  // namespace

EarlierLines earlier_lines(const std::string& path, const LineTest& belongs, const LineTest& is_end,
                           const LineTest& keep) {
  namespace fs = std::filesystem;
  const std::string file = target_of(path);
  EarlierLines e;
  e.lines = lines_until(file, belongs, is_end, keep);
  if (!e.lines.empty()) {
    e.source = file;
    return e;
  }
  std::vector<std::pair<fs::file_time_type, std::string>> temps;
  std::error_code ec;
  const std::string name = base_of(file);
  for (auto it = fs::directory_iterator(dir_of(file), ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code sec;
    if (!is_temporary_of(it->path().filename().string(), name) || !fs::is_regular_file(it->symlink_status(sec)))
      continue;
    temps.emplace_back(fs::last_write_time(it->path(), sec), it->path().string());
  }
  std::sort(temps.rbegin(), temps.rend());
  for (const auto& [when, t] : temps) {
    e.lines = lines_until(t, belongs, is_end, keep);
    if (!e.lines.empty()) {
      e.source = t;
      e.temporary = true;
      return e;
    }
  }
  return e;
}

bool is_temporary_of(const std::string& name, const std::string& file_name) {
  const std::string stem = file_name + ".tmp.";
  return name.size() == stem.size() + 6 && name.compare(0, stem.size(), stem) == 0;
}

}  // namespace adasync
