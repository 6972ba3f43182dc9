// Test hooks of the reductions: _sum_of_squares, _column_sums, _all_finite.
#pragma once
#include <pybind11/pybind11.h>

void bind_reduction_hooks(pybind11::module_& m);
