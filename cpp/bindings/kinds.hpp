// Python side of every kind list (activations, losses, layer kinds, optimizers, ISAs) and of the
// structures that carry them (LayerSpec, ActParams, OptConfig): generated from the C++ lists, so
// Python never writes an integer code or a positional tuple.
#pragma once
#include <pybind11/pybind11.h>

namespace mlpcore::bindings {
void bind_kinds(pybind11::module_& m);
}
