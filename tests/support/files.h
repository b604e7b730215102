// Shared helpers of the tests that write files, run the trainer or check
// error messages.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace adasync::test {

// A path under the test's temporary directory with nothing at it.
inline std::string removed_path(const std::string& name) {
  const std::string p = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(p);
  return p;
}

// An empty directory under the test's temporary directory.
inline std::string fresh_dir(const std::string& name) {
  const std::string d = removed_path(name);
  std::filesystem::create_directories(d);
  return d;
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The names in dir, sorted.
inline std::vector<std::string> names(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

#ifdef ADASYNC_BINARY_DIR
inline std::string trainer_path() { return std::string(ADASYNC_BINARY_DIR) + "/trainer"; }
#endif

inline void expect_contains(const std::string& msg, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
}

// The message of the E that f throws; a failure when it throws another
// exception or none.
template <typename E, typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected another exception type, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an exception, nothing was thrown";
  return "";
}

}  // namespace adasync::test
