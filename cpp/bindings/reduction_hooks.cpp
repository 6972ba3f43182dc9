// Underscore test hooks for the reductions (kernels/reductions.hpp), so the tests can check
// them on every ISA copy: _sum_of_squares(x), _column_sums(x) and _all_finite(x) for a
// float32/float64 array.
#include "bindings/reduction_hooks.hpp"

#include <pybind11/numpy.h>

#include "kernels/reductions.hpp"

namespace py = pybind11;
using mlpcore::index_t;

namespace {

template <typename T>
double squares(const py::array_t<T, py::array::c_style>& x) {
  const T* data = x.data();
  const index_t n = index_t(x.size());
  py::gil_scoped_release release;
  return mlpcore::sum_of_squares<T>(data, n);
}

template <typename T>
py::array column_sums(const py::array_t<T, py::array::c_style>& x) {
  if (x.ndim() != 2) throw py::value_error("_column_sums: x must be 2-D");
  const index_t rows = x.shape(0), cols = x.shape(1);
  py::array_t<T> out(cols);
  mlpcore::column_sums<T>(x.data(), rows, cols, cols, out.mutable_data(), false);
  return out;
}

template <typename T>
bool finite(const py::array_t<T, py::array::c_style>& x) {
  return mlpcore::all_finite<T>(x.data(), index_t(x.size()));
}

bool is_float64(const py::array& x, const char* func) {
  if (x.dtype().is(py::dtype::of<double>())) return true;
  if (x.dtype().is(py::dtype::of<float>())) return false;
  throw py::type_error(std::string(func) + ": x must be float32 or float64, got " +
                       std::string(py::str(x.dtype())));
}

}  // namespace

void bind_reduction_hooks(py::module_& m) {
  m.def("_sum_of_squares", [](const py::array& x) {
    const bool f64 = is_float64(x, "_sum_of_squares");
    return f64 ? squares<double>(py::array_t<double, py::array::c_style>::ensure(x))
               : squares<float>(py::array_t<float, py::array::c_style>::ensure(x));
  });
  m.def("_column_sums", [](const py::array& x) {
    const bool f64 = is_float64(x, "_column_sums");
    return f64 ? column_sums<double>(py::array_t<double, py::array::c_style>::ensure(x))
               : column_sums<float>(py::array_t<float, py::array::c_style>::ensure(x));
  });
  m.def("_all_finite", [](const py::array& x) {
    const bool f64 = is_float64(x, "_all_finite");
    return f64 ? finite<double>(py::array_t<double, py::array::c_style>::ensure(x))
               : finite<float>(py::array_t<float, py::array::c_style>::ensure(x));
  });
}
