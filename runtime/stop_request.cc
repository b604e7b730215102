#include "runtime/stop_request.h"

#include <atomic>

namespace adasync {

namespace {
std::atomic<int> g_stop_signal{0};
}  // namespace

void request_stop(int signal) { g_stop_signal.store(signal == 0 ? -1 : signal, std::memory_order_relaxed); }
int stop_signal() { return g_stop_signal.load(std::memory_order_relaxed); }
void clear_stop_request() { g_stop_signal.store(0); }

}  // namespace adasync
