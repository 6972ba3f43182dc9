#pragma once
#include <pybind11/pybind11.h>

namespace mlpcore::bindings {
void bind_network(pybind11::module_& m);
}
