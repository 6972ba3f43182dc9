// The GIL released around native work and taken back, safely when the interpreter is exiting.
// A daemon thread still in native code when the interpreter shuts down is ended by Python inside
// the GIL's acquire (a forced unwind of the thread); crossing a destructor or a noexcept
// function, that unwind becomes std::terminate and the process aborts ("terminate called
// without an active exception"). Such a thread is parked instead, before it asks for the GIL,
// until the process exits (what Python 3.14 does itself with threads that ask for it then).
#pragma once
#include <pybind11/pybind11.h>

namespace mlpcore::bindings {

namespace py = pybind11;

// Records Python's main thread (at module import): the one thread shutdown never ends.
void note_main_thread();
// The interpreter is shutting down and this is not the main thread (one it would end).
bool interpreter_exiting() noexcept;
[[noreturn]] void park_until_exit() noexcept;

inline void park_if_exiting() noexcept {
  if (interpreter_exiting()) park_until_exit();
}

// py::gil_scoped_release, parked at exit instead of taking the GIL back (the destructor's body
// runs before the member's, which takes it)
class GilRelease {
 public:
  GilRelease() = default;
  ~GilRelease() { park_if_exiting(); }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  py::gil_scoped_release release_;
};

// py::gil_scoped_acquire, parked at exit instead of asking for the GIL (a base is built before
// the members: the check runs first)
struct ParkedIfExiting {
  ParkedIfExiting() noexcept { park_if_exiting(); }
};
class GilAcquire : ParkedIfExiting {
 public:
  GilAcquire() = default;
  GilAcquire(const GilAcquire&) = delete;
  GilAcquire& operator=(const GilAcquire&) = delete;

 private:
  py::gil_scoped_acquire acquire_;
};

}  // namespace mlpcore::bindings
