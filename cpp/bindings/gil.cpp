#include "bindings/gil.hpp"

#include <chrono>
#include <thread>

namespace mlpcore::bindings {

bool interpreter_exiting() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

void park_until_exit() noexcept {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace mlpcore::bindings
