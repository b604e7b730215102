// Internal seam between the host-side Context code and the CUDA backend.
// Defined in kernels/cuda/context.cu; only called when ADASYNC_HAVE_CUDA.
#pragma once

#include <string>

#include "kernels/context.h"

namespace adasync::cuda_backend {

int device_count(std::string* reason);
void* alloc(MemKind kind, size_t bytes, int device);  // Pinned or Device
void free(MemKind kind, void* p, int device) noexcept;
void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream);
CudaState* create_state(int device, const std::string& name);
void destroy_state(CudaState* s) noexcept;
cudaStream_t stream(const CudaState* s);
void synchronize(CudaState* s);
cudaEvent_t event_create(int device);
void event_destroy(cudaEvent_t e) noexcept;
void event_record(cudaEvent_t e, cudaStream_t s);
void event_wait(cudaEvent_t e, cudaStream_t s);
void event_synchronize(cudaEvent_t e);
void* mapped_alloc(size_t bytes);
GraphState* graph_create();
void graph_destroy(GraphState* g) noexcept;
void graph_begin(GraphState* g, cudaStream_t s);
void graph_abort(GraphState* g, cudaStream_t s) noexcept;
void set_current(int device);
void graph_end(GraphState* g, cudaStream_t s);
void graph_launch(const GraphState* g, cudaStream_t s);
bool graph_ready(const GraphState* g);
void graph_reset(GraphState* g) noexcept;
void mapped_free(void* p) noexcept;

}  // namespace adasync::cuda_backend
