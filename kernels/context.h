// Context: where an op runs. One Context per worker, used by one thread.
//
// A CPU context carries an optional ThreadPool for data-parallel loops. A CUDA
// context owns one non-blocking stream (named after its worker for Nsight),
// a cuBLAS handle and a cuDNN handle bound to that stream, a device workspace
// and the cuDNN algorithm cache; every op launched through it goes on that
// stream and never synchronises the device. The header includes no CUDA
// headers, so CPU-only code depends on it freely.
//
// Also here: the Error type and the EXPECTS precondition macro, owned buffers
// (host, pinned, device), and the NVTX range macro.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/thread_pool.h"

// Opaque CUDA handle types, identical to the CUDA headers' typedefs.
struct CUstream_st;
struct CUevent_st;
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;

namespace adasync {

// ---------------------------------------------------------------- errors
// The project's errors, each with the trainer's exit code for it: 1 the run
// failed (and anything not an Error: an internal error), 2 bad input (flags,
// files), 3 an output that could not be written (runtime/output.h).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  virtual int exit_code() const { return 1; }
};

// Bad user input (flags, files): exit code 2.
class UsageError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return 2; }
};

[[noreturn]] void throw_error(const char* file, int line, const std::string& what);

#define ADASYNC_STR_(x) #x
#define EXPECTS(cond, msg)                                                         \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::ostringstream adasync_os_;                                              \
      adasync_os_ << "precondition failed: " #cond ": " << msg;                    \
      ::adasync::throw_error(__FILE__, __LINE__, adasync_os_.str());               \
    }                                                                              \
  } while (0)

// ---------------------------------------------------------------- devices
enum class DeviceKind { CPU, CUDA };
const char* to_string(DeviceKind k);

// Number of usable CUDA devices; 0 when built without CUDA or when the driver
// is missing or broken (any error from cudaGetDeviceCount means "no GPU").
int cuda_device_count();
// One line naming the reason cuda_device_count() is 0, or "" when it is not.
std::string cuda_unavailable_reason();

// ---------------------------------------------------------------- memory
enum class MemKind { Host, Pinned, Device };
const char* to_string(MemKind k);

// Raw allocation. Host memory is 64-byte aligned. Pinned falls back to host
// memory when no CUDA device is usable; `got` reports which kind was given.
void* mem_alloc(MemKind kind, size_t bytes, int device, MemKind* got);
void mem_free(MemKind kind, void* p, int device) noexcept;

// Move-only owner of n elements of T in one memory kind.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemKind kind, size_t n, int device = 0) : kind_(kind), n_(n), device_(device) {
    if (n > 0) data_ = static_cast<T*>(mem_alloc(kind, n * sizeof(T), device, &kind_));
  }
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      n_ = std::exchange(o.n_, 0);
      kind_ = o.kind_;
      device_ = o.device_;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void reset() noexcept {
    if (data_ != nullptr) mem_free(kind_, data_, device_);
    data_ = nullptr;
    n_ = 0;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  MemKind kind() const { return kind_; }
  bool on_device() const { return kind_ == MemKind::Device; }

 private:
  T* data_ = nullptr;
  MemKind kind_ = MemKind::Host;
  size_t n_ = 0;
  int device_ = 0;
};

// Copies between any two memory kinds; for CUDA kinds it is asynchronous on
// `stream` (nullptr allowed only for host-to-host).
void mem_copy(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// Host memory that a GPU can read and write directly (pinned and mapped), for
// flags polled by kernels; plain host memory without a GPU.
void* mapped_alloc(size_t bytes, bool* mapped);
void mapped_free(void* p, bool mapped) noexcept;

// ---------------------------------------------------------------- context
struct CudaState;  // defined by the CUDA backend

class Context {
 public:
  // pool may be null (serial). The pool is not owned.
  static std::unique_ptr<Context> cpu(ThreadPool* pool = nullptr);
  // Throws when built without CUDA or when `device` is not usable.
  static std::unique_ptr<Context> cuda(int device, const std::string& name);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  DeviceKind kind() const { return kind_; }
  bool is_cuda() const { return kind_ == DeviceKind::CUDA; }
  int device() const { return device_; }
  const std::string& name() const { return name_; }
  ThreadPool* pool() const { return pool_; }
  void set_pool(ThreadPool* pool) { pool_ = pool; }
  MemKind mem_kind() const { return is_cuda() ? MemKind::Device : MemKind::Host; }

  cudaStream_t stream() const;  // nullptr on CPU
  CudaState* cuda_state() const { return cuda_.get(); }

  // Scratch memory of at least `bytes` in this context's memory kind; valid
  // until the next call with a larger size. Ops use it for im2col and cuDNN.
  void* workspace(size_t bytes);
  // Blocks until all work queued on this context is done (tests, shutdown).
  void synchronize();
  // Makes this context's device current on the calling thread (CUDA; cheap
  // when it already is). Worker threads call it before touching their device.
  void make_current() const;

  // Use TF32 tensor cores for cuDNN convolutions / cuBLAS GEMMs (CUDA only).
  bool tf32_conv = true;
  bool tf32_gemm = false;
  // Restrict cuDNN to deterministic algorithms (replay on the GPU).
  bool deterministic = false;
  // Batch norm through cuDNN (CUDA only); false, or with `deterministic`, our
  // kernels, which sum in double in a fixed order as the CPU twin does.
  bool cudnn_batchnorm = true;
  // Capture fixed steps as CUDA graphs (workers fall back to eager launches
  // if a capture fails).
  bool use_graphs = true;

 private:
  Context() = default;
  struct CudaStateDeleter {
    void operator()(CudaState* s) const noexcept;
  };
  DeviceKind kind_ = DeviceKind::CPU;
  int device_ = -1;
  std::string name_;
  ThreadPool* pool_ = nullptr;
  Buffer<unsigned char> workspace_;
  std::unique_ptr<CudaState, CudaStateDeleter> cuda_;
};

// Move-only CUDA event (timing off, blocking sync so a waiting host thread
// sleeps instead of spinning); every call is a no-op for CPU contexts.
class Event {
 public:
  Event() = default;
  ~Event();
  Event(Event&& o) noexcept : ev_(std::exchange(o.ev_, nullptr)) {}
  Event& operator=(Event&& o) noexcept {
    std::swap(ev_, o.ev_);
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  // Marks the current end of ctx's stream.
  void record(Context& ctx);
  // Makes ctx's stream wait for this event (no host wait).
  void wait_on(Context& ctx) const;
  // Host waits until the recorded work is done.
  void synchronize() const;

 private:
  cudaEvent_t ev_ = nullptr;
};

// A CUDA graph captured from a context's stream and replayed on it: the
// fixed part of a worker's step (same shapes, same buffers) launched as one
// unit. All calls are no-ops for CPU contexts.
struct GraphState;
class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void begin_capture(Context& ctx);
  void end_capture(Context& ctx);  // instantiates
  void abort_capture(Context& ctx) noexcept;  // after an error inside a capture
  void launch(Context& ctx) const;
  bool ready() const;
  void reset();

 private:
  std::unique_ptr<GraphState, void (*)(GraphState*)> state_;
};

// ---------------------------------------------------------------- NVTX
// ADASYNC_RANGE("w3/pull") marks the enclosing scope: an NVTX range in the
// project's own domain ("adasync") when NVTX is compiled in, and, when the
// environment sets ADASYNC_PROFILE=1, host time accumulated per range name
// (range_totals()), so a per-range summary exists even without Nsight.
class ScopedRange {
 public:
  explicit ScopedRange(const char* msg);
  explicit ScopedRange(const std::string& msg) : ScopedRange(msg.c_str()) {}
  ~ScopedRange();
  ScopedRange(const ScopedRange&) = delete;
  ScopedRange& operator=(const ScopedRange&) = delete;

 private:
  std::string name_;  // set only while profiling
  int64_t start_ns_ = 0;
};
#define ADASYNC_CONCAT2_(a, b) a##b
#define ADASYNC_CONCAT_(a, b) ADASYNC_CONCAT2_(a, b)
#define ADASYNC_RANGE(msg) ::adasync::ScopedRange ADASYNC_CONCAT_(adasync_range_, __LINE__)(msg)

struct RangeTotal {
  std::string name;
  int64_t calls = 0;
  double seconds = 0;
};
bool profiling_enabled();
// Per-range host totals so far (ADASYNC_PROFILE=1), largest first.
std::vector<RangeTotal> range_totals();

// Names the calling host thread in profilers (OS thread name and NVTX).
void name_this_thread(const std::string& name);

}  // namespace adasync
