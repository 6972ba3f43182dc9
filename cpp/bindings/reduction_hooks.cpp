// Underscore hooks for the reductions (kernels/reductions.hpp), so the tests can check them on
// every ISA copy: _sum_of_squares(x), _add_into_squares(g, h, w, two_l2, n_w), _column_sums(x),
// _all_finite(x) and _to_float(x, f64) for float32/float64 arrays. The last two also check and
// cast the data given to fit/predict.
#include "bindings/reduction_hooks.hpp"

#include <pybind11/numpy.h>

#include <algorithm>

#include "bindings/gil.hpp"
#include "kernels/reductions.hpp"

namespace py = pybind11;
using mlpcore::bindings::GilAcquire;
using mlpcore::bindings::GilRelease;
using mlpcore::index_t;

namespace {

template <typename T>
double squares(const py::array_t<T, py::array::c_style>& x) {
  const T* data = x.data();
  const index_t n = index_t(x.size());
  GilRelease release;
  return mlpcore::sum_of_squares<T>(data, n);
}

// (a new g = g + h, then + two_l2 * w on its first n_w elements; its sum of squares)
template <typename T>
py::tuple add_into_squares(const py::array& g_in, const py::array& h_in, const py::array& w_in,
                           double two_l2, index_t n_w) {
  const auto g = py::array_t<T, py::array::c_style>::ensure(g_in);
  const auto h = py::array_t<T, py::array::c_style>::ensure(h_in);
  const auto w = py::array_t<T, py::array::c_style>::ensure(w_in);
  const index_t n = g ? index_t(g.size()) : 0;
  if (!g || !h || !w || index_t(h.size()) != n || index_t(w.size()) != n)
    throw py::value_error("_add_into_squares: g, h and w must have the same size and dtype");
  if (n_w < 0 || n_w > n) throw py::value_error("_add_into_squares: n_w must be in 0 .. g.size");
  py::array_t<T> out(n);
  std::copy(g.data(), g.data() + n, out.mutable_data());
  const double sq = mlpcore::add_into_squares<T>(out.mutable_data(), h.data(), w.data(), T(two_l2),
                                                 n_w, n);
  return py::make_tuple(out, sq);
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
  // (equivalent dtypes count: a memory-mapped array's float64 is not NumPy's own object)
  if (py::isinstance<py::array_t<double>>(x)) return true;
  if (py::isinstance<py::array_t<float>>(x)) return false;
  throw py::type_error(std::string(func) + ": x must be float32 or float64, got " +
                       std::string(py::str(x.dtype())));
}

// x (float32 or float64, any shape) as a new C-contiguous array of Dst, and whether every
// value came out finite (see convert_finite).
template <typename Src, typename Dst>
py::tuple to_float(const py::array& obj) {
  const auto x = py::array_t<Src, py::array::c_style>::ensure(obj);
  const std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  py::array_t<Dst, py::array::c_style> out(shape);
  const Src* src = x.data();
  Dst* dst = out.mutable_data();
  const index_t n = index_t(x.size());
  bool finite;
  {
    GilRelease release;
    finite = mlpcore::convert_finite<Src, Dst>(src, n, dst);
  }
  return py::make_tuple(out, finite);
}

}  // namespace

void bind_reduction_hooks(py::module_& m) {
  m.def("_sum_of_squares", [](const py::array& x) {
    const bool f64 = is_float64(x, "_sum_of_squares");
    return f64 ? squares<double>(py::array_t<double, py::array::c_style>::ensure(x))
               : squares<float>(py::array_t<float, py::array::c_style>::ensure(x));
  });
  m.def("_add_into_squares", [](const py::array& g, const py::array& h, const py::array& w,
                                 double two_l2, index_t n_w) {
    return is_float64(g, "_add_into_squares") ? add_into_squares<double>(g, h, w, two_l2, n_w)
                                              : add_into_squares<float>(g, h, w, two_l2, n_w);
  });
  m.def("_column_sums", [](const py::array& x) {
    const bool f64 = is_float64(x, "_column_sums");
    return f64 ? column_sums<double>(py::array_t<double, py::array::c_style>::ensure(x))
               : column_sums<float>(py::array_t<float, py::array::c_style>::ensure(x));
  });
  m.def("_to_float", [](const py::array& x, bool to_float64) {
    const bool f64 = is_float64(x, "_to_float");
    if (f64) return to_float64 ? to_float<double, double>(x) : to_float<double, float>(x);
    return to_float64 ? to_float<float, double>(x) : to_float<float, float>(x);
  });
  m.def("_all_finite", [](const py::array& x) {
    const bool f64 = is_float64(x, "_all_finite");
    return f64 ? finite<double>(py::array_t<double, py::array::c_style>::ensure(x))
               : finite<float>(py::array_t<float, py::array::c_style>::ensure(x));
  });
}
