// SIGINT / SIGTERM: the run stops at its next update, writes a final
// checkpoint (with --checkpoint-dir) and exits 0. request_stop is
// async-signal-safe; stop_signal() is 0 until a stop was requested. Below
// every layer: the supervisor acts on it, and the MPI ranks shorten their
// end-of-run waits once the job is going down.
#pragma once

namespace adasync {

void request_stop(int signal);
int stop_signal();
void clear_stop_request();

}  // namespace adasync
