// CUDA side of Context, buffers, events and graphs (kernels/cuda/backend.h).
#include <nvtx3/nvToolsExtCudaRt.h>

#include <cstring>

#include "kernels/cuda/backend.h"
#include "kernels/cuda/state.cuh"

namespace adasync {

void set_device(const CudaState& s) {
  int cur = -1;
  CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != s.device) CUDA_CHECK(cudaSetDevice(s.device));
}

BnPlan::~BnPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (per_channel) cudnnDestroyTensorDescriptor(per_channel);
}

ConvPlan::~ConvPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (bias) cudnnDestroyTensorDescriptor(bias);
  if (w) cudnnDestroyFilterDescriptor(w);
  if (conv) cudnnDestroyConvolutionDescriptor(conv);
  if (identity) cudnnDestroyActivationDescriptor(identity);
}

struct GraphState {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

namespace cuda_backend {

int device_count(std::string* reason) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    // Without a driver this is cudaErrorInsufficientDriver or NoDevice, not 0 devices.
    *reason = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  if (n == 0) *reason = "cudaGetDeviceCount reports no device";
  return n;
}

void* alloc(MemKind kind, size_t bytes, int device) {
  void* p = nullptr;
  if (kind == MemKind::Device) {
    int cur = -1;
    CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != device) CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaMalloc(&p, bytes));
    if (cur != device) CUDA_CHECK(cudaSetDevice(cur));
  } else {
    // Portable: every device sees it as pinned, whichever is current.
    CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocPortable));
  }
  return p;
}

void free(MemKind kind, void* p, int) noexcept {
  if (kind == MemKind::Device) CUDA_CHECK_NOTHROW(cudaFree(p));
  else CUDA_CHECK_NOTHROW(cudaFreeHost(p));
}

void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
}

}  // namespace cuda_backend

CudaState::~CudaState() {
  cudaSetDevice(device);
  if (stream) CUDA_CHECK_NOTHROW(cudaStreamSynchronize(stream));
  conv_plans.clear();
  if (cudnn) cudnnDestroy(cudnn);
  if (cublas) cublasDestroy(cublas);
  if (cublas_ws) CUDA_CHECK_NOTHROW(cudaFree(cublas_ws));
  if (stream) CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream));
}

namespace cuda_backend {

CudaState* create_state(int device, const std::string& name) {
  auto s = std::make_unique<CudaState>();
  s->device = device;
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
  nvtxNameCudaStreamA(s->stream, name.c_str());
  CUBLAS_CHECK(cublasCreate(&s->cublas));
  CUBLAS_CHECK(cublasSetStream(s->cublas, s->stream));
  // A fixed workspace: cuBLAS then never allocates during a graph capture.
  s->cublas_ws_bytes = size_t(32) << 20;
  CUDA_CHECK(cudaMalloc(&s->cublas_ws, s->cublas_ws_bytes));
  CUBLAS_CHECK(cublasSetWorkspace(s->cublas, s->cublas_ws, s->cublas_ws_bytes));
  CUBLAS_CHECK(cublasSetMathMode(s->cublas, CUBLAS_DEFAULT_MATH));
  CUDNN_CHECK(cudnnCreate(&s->cudnn));
  CUDNN_CHECK(cudnnSetStream(s->cudnn, s->stream));
  return s.release();
}

void destroy_state(CudaState* s) noexcept { delete s; }

cudaStream_t stream(const CudaState* s) { return s->stream; }

void synchronize(CudaState* s) { CUDA_CHECK(cudaStreamSynchronize(s->stream)); }

cudaEvent_t event_create(int device) {
  CUDA_CHECK(cudaSetDevice(device));  // an event belongs to the device current at creation
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync));
  return e;
}
void event_destroy(cudaEvent_t e) noexcept { CUDA_CHECK_NOTHROW(cudaEventDestroy(e)); }
void event_record(cudaEvent_t e, cudaStream_t s) { CUDA_CHECK(cudaEventRecord(e, s)); }
void event_wait(cudaEvent_t e, cudaStream_t s) { CUDA_CHECK(cudaStreamWaitEvent(s, e, 0)); }
void event_synchronize(cudaEvent_t e) { CUDA_CHECK(cudaEventSynchronize(e)); }

void* mapped_alloc(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocMapped | cudaHostAllocPortable));
  std::memset(p, 0, bytes);
  return p;
}
void mapped_free(void* p) noexcept { CUDA_CHECK_NOTHROW(cudaFreeHost(p)); }

GraphState* graph_create() { return new GraphState(); }
void graph_reset(GraphState* g) noexcept {
  if (g->exec) CUDA_CHECK_NOTHROW(cudaGraphExecDestroy(g->exec));
  if (g->graph) CUDA_CHECK_NOTHROW(cudaGraphDestroy(g->graph));
  g->exec = nullptr;
  g->graph = nullptr;
}
void graph_destroy(GraphState* g) noexcept {
  if (g == nullptr) return;
  graph_reset(g);
  delete g;
}
void graph_begin(GraphState* g, cudaStream_t s) {
  graph_reset(g);
  // Thread-local mode: other threads' CUDA calls (other workers) are unaffected.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
}
void graph_abort(GraphState* g, cudaStream_t s) noexcept {
  cudaGraph_t partial = nullptr;
  cudaStreamEndCapture(s, &partial);  // ends the capture whatever state it is in
  if (partial) cudaGraphDestroy(partial);
  cudaGetLastError();
  graph_reset(g);
}
void set_current(int device) {
  int cur = -1;
  CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device) CUDA_CHECK(cudaSetDevice(device));
}
void graph_end(GraphState* g, cudaStream_t s) {
  CUDA_CHECK(cudaStreamEndCapture(s, &g->graph));
  CUDA_CHECK(cudaGraphInstantiate(&g->exec, g->graph, 0));
}
void graph_launch(const GraphState* g, cudaStream_t s) { CUDA_CHECK(cudaGraphLaunch(g->exec, s)); }
bool graph_ready(const GraphState* g) { return g->exec != nullptr; }

}  // namespace cuda_backend
}  // namespace adasync
