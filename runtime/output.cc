#include "runtime/output.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kernels/context.h"

namespace adasync {

namespace {
std::string dir_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}
void fsync_dir(const std::string& path) {
  const int fd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

AtomicLines::AtomicLines(const std::string& path) : path_(path), tmp_(path + ".tmp") {
  f_ = std::fopen(tmp_.c_str(), "w");
  if (f_ == nullptr)
    throw UsageError("cannot create '" + tmp_ + "' (for " + path + "): " + std::strerror(errno));
}

AtomicLines::~AtomicLines() {
  if (f_ != nullptr) std::fclose(f_);  // not committed: the .tmp stays as the partial record
}

void AtomicLines::write(const nlohmann::json& j) { write_line(j.dump()); }

void AtomicLines::write_line(const std::string& line) {
  const std::string whole = line + '\n';
  std::lock_guard<std::mutex> lk(mu_);
  if (f_ == nullptr) return;
  std::fwrite(whole.data(), 1, whole.size(), f_);
  std::fflush(f_);
}

void AtomicLines::commit() {
  std::lock_guard<std::mutex> lk(mu_);
  if (f_ == nullptr) return;
  std::fflush(f_);
  ::fsync(fileno(f_));
  std::fclose(f_);
  f_ = nullptr;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw Error("cannot rename '" + tmp_ + "' to '" + path_ + "': " + std::strerror(errno));
  fsync_dir(path_);
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

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot create '" + tmp + "': " + std::strerror(errno));
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      throw Error("cannot write '" + tmp + "': " + err);
    }
    off += size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) throw Error("cannot flush '" + tmp + "': " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
  fsync_dir(path);
}

}  // namespace adasync
