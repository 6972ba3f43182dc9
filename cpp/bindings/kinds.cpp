#include "bindings/kinds.hpp"

#include <string>

#include "kernels/activations.hpp"
#include "kernels/losses.hpp"
#include "kernels/optim.hpp"
#include "net/network.hpp"

namespace mlpcore::bindings {

namespace py = pybind11;

namespace {

// A constructor taking keyword arguments only, each set through the bound property of that name:
// a misspelt field raises AttributeError instead of being ignored.
template <typename Struct, typename Class>
void init_from_keywords(Class& cls) {
  cls.def(py::init([](const py::kwargs& fields) {
    py::object self = py::cast(Struct());
    for (const auto& item : fields) {
      const std::string name = py::str(item.first);
      if (!py::hasattr(self, name.c_str()))
        throw py::type_error(std::string(py::str(py::type::of(self).attr("__name__"))) +
                             "() got an unexpected keyword argument '" + name + "'");
      py::setattr(self, name.c_str(), item.second);
    }
    return self.cast<Struct>();
  }));
}

}  // namespace

void bind_kinds(py::module_& m) {
  py::enum_<Act> act(m, "Act", "Activation kinds (cpp/kernels/activations.hpp).");
#define MLPCORE_ENUM_VALUE(name, elementwise) act.value(#name, Act::name);
  MLPCORE_ACTIVATIONS(MLPCORE_ENUM_VALUE)
#undef MLPCORE_ENUM_VALUE
  act.def_property_readonly("elementwise", [](Act a) { return is_elementwise(a); });

  py::enum_<Loss> loss(m, "Loss", "Native losses (cpp/kernels/losses.hpp).");
#define MLPCORE_ENUM_VALUE(name) loss.value(#name, Loss::name);
  MLPCORE_LOSSES(MLPCORE_ENUM_VALUE)
#undef MLPCORE_ENUM_VALUE

  py::enum_<LayerKind> layer(m, "LayerKind", "Layer kinds of the native plan (net/network.hpp).");
#define MLPCORE_ENUM_VALUE(name, display) layer.value(#name, LayerKind::name);
  MLPCORE_LAYER_KINDS(MLPCORE_ENUM_VALUE)
#undef MLPCORE_ENUM_VALUE

  py::enum_<OptKind> opt(m, "OptKind", "Optimizer rules (cpp/kernels/optim.hpp).");
#define MLPCORE_ENUM_VALUE(name) opt.value(#name, OptKind::name);
  MLPCORE_OPTIMIZERS(MLPCORE_ENUM_VALUE)
#undef MLPCORE_ENUM_VALUE

  py::class_<ActParams> act_params(m, "ActParams",
                                   "Scalar parameters of the parametrised activations.");
  act_params.def_readwrite("negative_slope", &ActParams::negative_slope)
      .def_readwrite("alpha", &ActParams::alpha)
      .def_readwrite("beta", &ActParams::beta)
      .def_readwrite("threshold", &ActParams::threshold);
  init_from_keywords<ActParams>(act_params);

  py::class_<LayerSpec> spec(m, "LayerSpec", "One entry of the native layer plan.");
  spec.def_readwrite("kind", &LayerSpec::kind)
      .def_readwrite("in_features", &LayerSpec::in_features)
      .def_readwrite("out_features", &LayerSpec::out_features)
      .def_readwrite("l1", &LayerSpec::l1)
      .def_readwrite("l2", &LayerSpec::l2)
      .def_readwrite("act", &LayerSpec::act)
      .def_readwrite("params", &LayerSpec::params)
      .def_readwrite("p", &LayerSpec::p)
      .def_readwrite("eps", &LayerSpec::eps)
      .def_readwrite("momentum", &LayerSpec::momentum);
  init_from_keywords<LayerSpec>(spec);

  py::class_<OptConfig> cfg(m, "OptConfig",
                            "An optimizer rule and its hyper-parameters (torch.optim's names).");
  cfg.def_readwrite("kind", &OptConfig::kind);
  py::list fields;
#define MLPCORE_FIELD_PROPERTY(type, name, value) \
  cfg.def_readwrite(#name, &OptConfig::name);     \
  fields.append(#name);
  MLPCORE_OPT_FIELDS(MLPCORE_FIELD_PROPERTY)
#undef MLPCORE_FIELD_PROPERTY
  cfg.attr("fields") = py::tuple(fields);
  cfg.def("validate", [](const OptConfig& c) {
    const std::string invalid = invalid_optimizer_config(c);
    if (!invalid.empty()) throw py::value_error(invalid);
  }, "Raise ValueError naming the first hyper-parameter no rule can use.");
  init_from_keywords<OptConfig>(cfg);
}

}  // namespace mlpcore::bindings
