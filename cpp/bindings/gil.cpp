#include "bindings/gil.hpp"

#include <atomic>
#include <chrono>
#include <thread>

namespace mlpcore::bindings {

namespace {
// Python's main thread (threading.main_thread()), which runs the interpreter's shutdown and so
// is never ended by it: it goes on through native calls made then (an object's __del__).
std::atomic<unsigned long> g_main_thread{0};
}  // namespace

void note_main_thread() {
  g_main_thread.store(
      py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>());
}

bool interpreter_exiting() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  const bool finalizing = Py_IsFinalizing() != 0;
#else
  const bool finalizing = _Py_IsFinalizing() != 0;
#endif
  return finalizing && PyThread_get_thread_ident() != g_main_thread.load();
}

void park_until_exit() noexcept {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace mlpcore::bindings
