// The extension module mlpcore._core: the only translation units that see pybind11 types are
// in cpp/bindings/.
#include <pybind11/pybind11.h>

#include <atomic>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <pthread.h>

#include "bindings/checks.hpp"
#include "bindings/gil.hpp"
#include "bindings/kinds.hpp"
#include "bindings/matmul.hpp"
#include "kernels/denormals.hpp"
#include "bindings/network_bindings.hpp"
#include "bindings/reduction_hooks.hpp"
#include "net/aligned_buffer.hpp"
#include "net/fork_state.hpp"

namespace py = pybind11;

namespace {

// After fork() the child has only the forking thread, but libgomp still believes its worker
// threads exist: the first parallel region would wait for them forever. So a forked child runs
// every kernel on one thread (a team of one never touches the pool). The count the parent used
// is kept so Python can warn once (mlpcore/__init__.py).
std::atomic<int> g_threads_before_fork{0};

void before_fork() noexcept { mlpcore::note_fork_prepare(); }

void after_fork_in_child() noexcept {
  mlpcore::note_fork_in_child();
#ifdef _OPENMP
  g_threads_before_fork.store(omp_get_max_threads());
  omp_set_num_threads(1);
#endif
}

}  // namespace

bool mlpcore::bindings::in_forked_child() noexcept { return g_threads_before_fork.load() > 0; }

namespace {

void set_num_threads(int n) {
  mlpcore::bindings::check_threads(n, "set_num_threads", "n");
  if (mlpcore::bindings::in_forked_child() && n > 1) {
    if (PyErr_WarnEx(PyExc_RuntimeWarning,
                     "set_num_threads: this process was forked from one that used OpenMP, whose "
                     "threads cannot be used after fork; mlpcore stays on 1 thread here (start "
                     "workers with the 'spawn' or 'forkserver' method to use more)",
                     1) < 0)
      throw py::error_already_set();
    return;
  }
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
}

int get_num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "mlpcore native core: layers, activations, losses, backprop, optimizers, GEMM";
  pthread_atfork(before_fork, nullptr, after_fork_in_child);
  mlpcore::bindings::note_main_thread();
  // a request beyond the machine's memory, refused before it was made: MemoryError, its message
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const mlpcore::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });
  m.attr("_max_elements") = py::int_(mlpcore::kMaxElements);  // (sizes past it: ValueError)
  m.def("_threads_before_fork", [] { return g_threads_before_fork.load(); },
        "In a forked child: the OpenMP thread count of the parent (now 1 here); 0 otherwise.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Set the number of OpenMP threads used by mlpcore's kernels (for the calling thread).");
  m.def("get_num_threads", &get_num_threads, "Number of OpenMP threads mlpcore's kernels use.");
  m.def("has_openmp", &has_openmp, "Whether the extension was built with OpenMP.");
  m.def(
      "set_flush_denormal",
      [](bool on) { mlpcore::flush_denormals_setting().store(on); },
      py::arg("on"),
      "Treat subnormal floats as zero in mlpcore's kernels (default True; as "
      "torch.set_flush_denormal). Avoids the slow hardware path for tiny gradients late in "
      "training; results for normal-range values are unchanged.");
  m.def(
      "get_flush_denormal", [] { return mlpcore::flush_denormals_setting().load(); },
      "Whether subnormal floats are treated as zero in mlpcore's kernels.");
  mlpcore::bindings::bind_kinds(m);
  mlpcore::bindings::bind_network(m);
  bind_matmul(m);
  bind_reduction_hooks(m);
}
