// Validation at the Python boundary: every array that reaches a kernel passes through here, so
// the kernels can trust sizes, dtypes and contiguity. Errors name the function and argument.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "kernels/common.hpp"

namespace mlpcore::bindings {

namespace py = pybind11;

// Threads a caller may ask for (set_num_threads, fma_peak_gflops): a team larger than any
// machine only costs its creation (seconds for 2^31 - 1).
inline constexpr int kMaxThreads = 1024;

// A thread count from Python, checked: ValueError naming `func` and `arg` outside [1, kMaxThreads].
inline void check_threads(int n, const char* func, const char* arg) {
  if (n < 1 || n > kMaxThreads)
    throw py::value_error(std::string(func) + ": " + arg + " must lie in [1, " +
                          std::to_string(kMaxThreads) + "], got " + std::to_string(n));
}

// True in a child forked from a process whose OpenMP pool had started (module.cpp): its
// parallel regions must stay on one thread.
bool in_forked_child() noexcept;

template <typename T>
std::string dtype_name() {
  return py::str(py::dtype::of<T>()).cast<std::string>();
}

inline std::string shape_string(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(a.shape(d));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

inline std::string dtype_string(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

// A C-contiguous array of dtype T with `ndim` dimensions; throws TypeError / ValueError otherwise.
template <typename T>
py::array_t<T, py::array::c_style> require_array(const py::handle& obj, const char* func,
                                                 const char* arg, int ndim) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(func) + ": " + arg + " must be a numpy.ndarray, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a))
    throw py::type_error(std::string(func) + ": " + arg + " must have dtype " + dtype_name<T>() +
                         ", got " + dtype_string(a));
  if (a.ndim() != ndim)
    throw py::value_error(std::string(func) + ": " + arg + " must be " + std::to_string(ndim) +
                          "-D, got shape " + shape_string(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(func) + ": " + arg + " must be C-contiguous");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(a);
}

}  // namespace mlpcore::bindings
