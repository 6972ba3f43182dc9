// Python binding of the GEMM kernels: mc.matmul, mc.kernel_info and underscore test hooks.
#pragma once
#include <pybind11/pybind11.h>

void bind_matmul(pybind11::module_& m);
