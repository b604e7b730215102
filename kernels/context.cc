#include "kernels/context.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "kernels/collective.h"
#include "kernels/cuda/backend.h"

#if defined(ADASYNC_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#endif

namespace adasync {

void throw_error(const char* file, int line, const std::string& what) {
  const char* base = std::strrchr(file, '/');
  throw Error(what + " [" + (base ? base + 1 : file) + ":" + std::to_string(line) + "]");
}

const char* to_string(DeviceKind k) { return k == DeviceKind::CUDA ? "cuda" : "cpu"; }
const char* to_string(MemKind k) {
  switch (k) {
    case MemKind::Host: return "host";
    case MemKind::Pinned: return "pinned";
    case MemKind::Device: return "device";
  }
  return "?";
}

int cuda_device_count() {
#if defined(ADASYNC_HAVE_CUDA)
  static const int count = [] {
    std::string reason;
    return cuda_backend::device_count(&reason);
  }();
  return count;
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#if defined(ADASYNC_HAVE_CUDA)
  std::string reason;
  cuda_backend::device_count(&reason);
  return reason;
#else
  return "built without CUDA (nvcc was not found at configure time)";
#endif
}

void* mem_alloc(MemKind kind, size_t bytes, int device, MemKind* got) {
  if (bytes == 0) bytes = 1;
#if defined(ADASYNC_HAVE_CUDA)
  if (kind == MemKind::Device || (kind == MemKind::Pinned && cuda_device_count() > 0)) {
    *got = kind;
    return cuda_backend::alloc(kind, bytes, device);
  }
#else
  EXPECTS(kind != MemKind::Device, "device memory requested but adasync was built without CUDA");
#endif
  // Host (or pinned without a GPU): 64-byte aligned so vector loads never split lines.
  *got = MemKind::Host;
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (p == nullptr) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void mem_free(MemKind kind, void* p, int device) noexcept {
  if (p == nullptr) return;
#if defined(ADASYNC_HAVE_CUDA)
  if (kind != MemKind::Host) {
    cuda_backend::free(kind, p, device);
    return;
  }
#endif
  std::free(p);
}

void mem_copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
#if defined(ADASYNC_HAVE_CUDA)
  if (stream != nullptr) {
    cuda_backend::copy(dst, src, bytes, stream);
    return;
  }
#endif
  std::memcpy(dst, src, bytes);
}

void* mapped_alloc(size_t bytes, bool* mapped) {
#if defined(ADASYNC_HAVE_CUDA)
  if (cuda_device_count() > 0) {
    *mapped = true;
    return cuda_backend::mapped_alloc(bytes);
  }
#endif
  *mapped = false;
  void* p = std::calloc(1, bytes);
  if (p == nullptr) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return p;
}

void mapped_free(void* p, bool mapped) noexcept {
  if (p == nullptr) return;
#if defined(ADASYNC_HAVE_CUDA)
  if (mapped) {
    cuda_backend::mapped_free(p);
    return;
  }
#endif
  std::free(p);
}

Event::~Event() {
#if defined(ADASYNC_HAVE_CUDA)
  if (ev_ != nullptr) cuda_backend::event_destroy(ev_);
#endif
}

void Event::record(Context& ctx) {
#if defined(ADASYNC_HAVE_CUDA)
  if (!ctx.is_cuda()) return;
  if (ev_ == nullptr) ev_ = cuda_backend::event_create(ctx.device());
  cuda_backend::event_record(ev_, ctx.stream());
#endif
}

void Event::wait_on(Context& ctx) const {
#if defined(ADASYNC_HAVE_CUDA)
  if (ev_ != nullptr && ctx.is_cuda()) cuda_backend::event_wait(ev_, ctx.stream());
#endif
}

void Event::synchronize() const {
#if defined(ADASYNC_HAVE_CUDA)
  if (ev_ != nullptr) cuda_backend::event_synchronize(ev_);
#endif
}

#if defined(ADASYNC_HAVE_CUDA)
Graph::Graph() : state_(nullptr, cuda_backend::graph_destroy) {}
void Graph::begin_capture(Context& ctx) {
  if (!ctx.is_cuda()) return;
  if (!state_) state_.reset(cuda_backend::graph_create());
  cuda_backend::graph_begin(state_.get(), ctx.stream());
}
void Graph::end_capture(Context& ctx) {
  if (ctx.is_cuda() && state_) cuda_backend::graph_end(state_.get(), ctx.stream());
}
void Graph::launch(Context& ctx) const {
  if (ctx.is_cuda() && state_) cuda_backend::graph_launch(state_.get(), ctx.stream());
}
void Graph::abort_capture(Context& ctx) noexcept {
  if (ctx.is_cuda() && state_) cuda_backend::graph_abort(state_.get(), ctx.stream());
}
bool Graph::ready() const { return state_ && cuda_backend::graph_ready(state_.get()); }
void Graph::reset() {
  if (state_) cuda_backend::graph_reset(state_.get());
}
#else
Graph::Graph() : state_(nullptr, [](GraphState*) {}) {}
void Graph::begin_capture(Context&) {}
void Graph::end_capture(Context&) {}
void Graph::launch(Context&) const {}
void Graph::abort_capture(Context&) noexcept {}
bool Graph::ready() const { return false; }
void Graph::reset() {}
#endif
Graph::~Graph() = default;

#if !defined(ADASYNC_HAVE_CUDA)
struct NcclState {};
Communicator::Communicator(const std::vector<Context*>&) {
  throw Error("NCCL communicator requested but adasync was built without CUDA");
}
Communicator::~Communicator() = default;
void Communicator::all_reduce_sum(const std::vector<float*>&, size_t) {}
#endif

std::unique_ptr<Context> Context::cpu(ThreadPool* pool) {
  std::unique_ptr<Context> c(new Context());
  c->kind_ = DeviceKind::CPU;
  c->name_ = "cpu";
  c->pool_ = pool;
  return c;
}

std::unique_ptr<Context> Context::cuda(int device, const std::string& name) {
#if defined(ADASYNC_HAVE_CUDA)
  const int n = cuda_device_count();
  if (n == 0) throw Error("no usable CUDA device: " + cuda_unavailable_reason());
  EXPECTS(device >= 0 && device < n, "CUDA device " << device << " requested, " << n << " present");
  std::unique_ptr<Context> c(new Context());
  c->kind_ = DeviceKind::CUDA;
  c->device_ = device;
  c->name_ = name;
  c->cuda_.reset(cuda_backend::create_state(device, name));
  return c;
#else
  throw Error("CUDA context requested but adasync was built without CUDA");
#endif
}

Context::~Context() = default;

void Context::CudaStateDeleter::operator()(CudaState* s) const noexcept {
#if defined(ADASYNC_HAVE_CUDA)
  cuda_backend::destroy_state(s);
#endif
}

cudaStream_t Context::stream() const {
#if defined(ADASYNC_HAVE_CUDA)
  if (cuda_) return cuda_backend::stream(cuda_.get());
#endif
  return nullptr;
}

void* Context::workspace(size_t bytes) {
  if (workspace_.bytes() < bytes) {
    // The old buffer may still be read by queued device work: drain first.
    if (is_cuda() && workspace_.size() > 0) synchronize();
    workspace_ = Buffer<unsigned char>(mem_kind(), bytes + bytes / 4, device_);
  }
  return workspace_.data();
}

void Context::make_current() const {
#if defined(ADASYNC_HAVE_CUDA)
  if (cuda_) cuda_backend::set_current(device_);
#endif
}

void Context::synchronize() {
#if defined(ADASYNC_HAVE_CUDA)
  if (cuda_) cuda_backend::synchronize(cuda_.get());
#endif
}

namespace {
#if defined(ADASYNC_HAVE_NVTX)
nvtxDomainHandle_t nvtx_domain() {
  static nvtxDomainHandle_t d = nvtxDomainCreateA("adasync");
  return d;
}
#endif

const bool g_profiling = [] {
  const char* e = std::getenv("ADASYNC_PROFILE");
  return e != nullptr && e[0] != '\0' && e[0] != '0';
}();

struct ProfileTable {
  std::mutex mu;
  std::map<std::string, RangeTotal> totals;
};
ProfileTable& profile_table() {
  static ProfileTable t;
  return t;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

bool profiling_enabled() { return g_profiling; }

ScopedRange::ScopedRange(const char* msg) {
#if defined(ADASYNC_HAVE_NVTX)
  nvtxEventAttributes_t a{};
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.messageType = NVTX_MESSAGE_TYPE_ASCII;
  a.message.ascii = msg;
  nvtxDomainRangePushEx(nvtx_domain(), &a);
#endif
  if (g_profiling) {
    name_ = msg;
    start_ns_ = now_ns();
  }
}

ScopedRange::~ScopedRange() {
#if defined(ADASYNC_HAVE_NVTX)
  nvtxDomainRangePop(nvtx_domain());
#endif
  if (!name_.empty()) {
    const double dt = double(now_ns() - start_ns_) * 1e-9;
    ProfileTable& t = profile_table();
    std::lock_guard<std::mutex> lk(t.mu);
    RangeTotal& r = t.totals[name_];
    r.name = name_;
    ++r.calls;
    r.seconds += dt;
  }
}

std::vector<RangeTotal> range_totals() {
  ProfileTable& t = profile_table();
  std::lock_guard<std::mutex> lk(t.mu);
  std::vector<RangeTotal> v;
  for (auto& [k, r] : t.totals) v.push_back(r);
  std::sort(v.begin(), v.end(), [](const RangeTotal& a, const RangeTotal& b) { return a.seconds > b.seconds; });
  return v;
}

void name_this_thread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
#if defined(ADASYNC_HAVE_NVTX)
  nvtxNameOsThreadA(static_cast<uint32_t>(syscall(SYS_gettid)), name.c_str());
#endif
}

}  // namespace adasync
