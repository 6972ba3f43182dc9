// Python classes Network32 / Network64 over mlpcore::Network<T>: zero-copy views of the arenas,
// validated batch entry points that release the GIL around the native work.
#include "bindings/network_bindings.hpp"

#include <pybind11/stl.h>

#include "bindings/kinds.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bindings/checks.hpp"
#include "bindings/gil.hpp"
#include "kernels/reductions.hpp"
#include "net/network.hpp"

namespace mlpcore::bindings {

namespace {

template <typename T>
using NetPtr = std::shared_ptr<Network<T>>;

// Python's pending signals, asked between batches of a native loop: the GIL is taken for the
// moment of the check, which runs the Python handlers (Ctrl-C raises KeyboardInterrupt there).
// True leaves the exception set; the binding raises it once the loop has stopped.
bool python_signal_pending(void*) {
  GilAcquire gil;
  return PyErr_CheckSignals() != 0;
}
const StopCheck kPythonSignals{python_signal_pending, nullptr};

// Lock order: every call that takes a network's lock releases the GIL first. A thread holding
// the lock (a fit in another thread) takes the GIL to ask for signals, and one waiting for the
// lock with the GIL held would then wait for it forever.

// Multiply-adds of a predict call that runs without releasing the GIL (a few microseconds).
constexpr double kKeepGilWork = double(1 << 19);

// A Python callable as the network's StatReducer (synchronised BatchNorm): fn(values, kind)
// sums a float64 view of the statistics over the replicas in place. Its first exception is kept
// and raised once the pass is over; from then on the values are NaN (and fn is still called,
// so that every replica makes the same collective calls and the NaN reaches them all).
struct PyStatReducer {
  py::object fn;
  py::object error = py::none();
};

void reduce_in_python(void* ctx, double* values, index_t count, int kind) {
  auto* r = static_cast<PyStatReducer*>(ctx);
  GilAcquire gil;
  if (!r->error.is_none()) std::fill(values, values + count, std::nan(""));
  try {
    const py::capsule no_owner(values, [](void*) {});
    r->fn(py::array_t<double>({py::ssize_t(count)}, {py::ssize_t(sizeof(double))}, values,
                              no_owner),
          kind);
  } catch (py::error_already_set& e) {
    if (r->error.is_none()) r->error = e.value();
    std::fill(values, values + count, std::nan(""));
  }
}

// Raises the exception a Python StatReducer met during the last native call, if any.
template <typename T>
void raise_reducer_error(Network<T>& net) {
  const StatReducer& reducer = net.stat_reducer();
  if (reducer.reduce != reduce_in_python) return;
  auto* r = static_cast<PyStatReducer*>(reducer.ctx);
  if (r->error.is_none()) return;
  const py::object error = r->error;
  r->error = py::none();
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
  throw py::error_already_set();
}

// A NumPy view of native memory that keeps the network alive while the view exists.
template <typename T>
py::array view_of(const NetPtr<T>& net, T* data, std::vector<py::ssize_t> shape) {
  return py::array_t<T>(shape, data, py::cast(net));
}

// The input batch: (n, in) of dtype T, C-contiguous, finite, n >= 1.
template <typename T>
py::array_t<T, py::array::c_style> checked_inputs(Network<T>& net, const py::handle& obj,
                                                  const char* func, bool training = false) {
  auto x = require_array<T>(obj, func, "x", 2);
  if (x.shape(0) < 1) throw py::value_error(std::string(func) + ": x is an empty batch (0 rows)");
  // (a replica's shard of one row is fine when the statistics are those of every replica)
  if (training && net.has_local_batchnorm() && x.shape(0) == 1)
    throw py::value_error(std::string(func) + ": BatchNorm1d needs more than 1 sample per batch "
                          "in training, got a batch of 1");
  if (x.shape(1) != net.in_features())
    throw py::value_error(std::string(func) + ": x must have " + std::to_string(net.in_features()) +
                          " features (columns), got shape " + shape_string(x));
  if (!all_finite(x.data(), x.size())) {
    py::ssize_t i = 0;
    while (std::isfinite(x.data()[i])) ++i;
    throw py::value_error(std::string(func) + ": x contains NaN or Inf (first at index [" +
                          std::to_string(i / x.shape(1)) + ", " + std::to_string(i % x.shape(1)) +
                          "])");
  }
  return x;
}

// Targets for n rows: int64 labels (n,) for cross_entropy, or values (n, out) of dtype T.
template <typename T>
struct CheckedTargets {
  py::object keep_alive;
  Targets<T> targets;
};

// Targets for n rows: int64 labels (n,) for cross_entropy, or values (n, out) of dtype T.
// With scan_values, every label is range-checked and every value tested for NaN/Inf here;
// without (train_batches, whose data fit validated once), labels are checked natively for each
// gathered batch and non-finite values surface as a refused step.
template <typename T>
CheckedTargets<T> checked_targets(Network<T>& net, const py::handle& obj, index_t n,
                                  const char* func, bool scan_values = true) {
  CheckedTargets<T> out;
  const index_t k = net.out_features();
  if (py::isinstance<py::array>(obj) && py::reinterpret_borrow<py::array>(obj).ndim() == 1) {
    if (net.loss() != Loss::CrossEntropy)
      throw py::value_error(std::string(func) + ": y must be 2-D (n, " + std::to_string(k) +
                            ") for this loss");
    auto labels = require_array<std::int64_t>(obj, func, "y", 1);
    if (labels.shape(0) != n)
      throw py::value_error(std::string(func) + ": y must have " + std::to_string(n) +
                            " labels (one per row of x), got " + std::to_string(labels.shape(0)));
    const std::int64_t* l = labels.data();
    for (index_t i = 0; scan_values && i < n; ++i)
      if (l[i] < 0 || l[i] >= k)
        throw py::value_error(std::string(func) + ": y holds class label " + std::to_string(l[i]) +
                              " outside the valid range [0, " + std::to_string(k - 1) + "]");
    out.targets.labels = l;
    out.keep_alive = labels;
    return out;
  }
  auto values = require_array<T>(obj, func, "y", 2);
  if (values.shape(0) != n || values.shape(1) != k)
    throw py::value_error(std::string(func) + ": y must have shape (" + std::to_string(n) + ", " +
                          std::to_string(k) + "), got " + shape_string(values));
  if (scan_values && !all_finite(values.data(), values.size()))
    throw py::value_error(std::string(func) + ": y contains NaN or Inf");
  out.targets.values = values.data();
  out.keep_alive = values;
  return out;
}

// Optional per-sample weights: (n,) of dtype T; scanned for NaN/negatives only when `scan`.
template <typename T>
void attach_weights(CheckedTargets<T>& y, const py::object& obj, index_t n, const char* func,
                    bool scan, py::object& keep) {
  if (obj.is_none()) return;
  auto w = require_array<T>(obj, func, "sample_weight", 1);
  if (w.shape(0) != n)
    throw py::value_error(std::string(func) + ": sample_weight must have " + std::to_string(n) +
                          " entries (one per row of x), got " + std::to_string(w.shape(0)));
  if (scan) {
    const T* d = w.data();
    for (index_t i = 0; i < n; ++i)
      if (!(d[i] >= T(0)) || !std::isfinite(d[i]))
        throw py::value_error(std::string(func) +
                              ": sample_weight must be finite and non-negative, got " +
                              std::to_string(double(d[i])) + " at index " + std::to_string(i));
  }
  y.targets.weights = w.data();
  keep = w;
}

// x, targets and weights of a native training run, checked once for the whole fit (as_inputs /
// as_targets validated the values); here only what guards memory: dtypes, shapes, the batch
// size, and (natively, per gathered batch) every index and label.
template <typename T>
struct FitArrays {
  py::array_t<T, py::array::c_style> x;
  CheckedTargets<T> y;
  py::object keep_w;
};

template <typename T>
FitArrays<T> fit_arrays(Network<T>& net, const py::handle& x_obj, const py::handle& y_obj,
                        const py::object& w_obj, index_t batch_size, const char* func) {
  FitArrays<T> a;
  a.x = require_array<T>(x_obj, func, "x", 2);
  if (a.x.shape(1) != net.in_features() || a.x.shape(0) < 1)
    throw py::value_error(std::string(func) + ": x must have shape (n >= 1, " +
                          std::to_string(net.in_features()) + "), got " + shape_string(a.x));
  if (batch_size < 1) throw py::value_error(std::string(func) + ": batch_size must be >= 1");
  a.y = checked_targets(net, y_obj, a.x.shape(0), func, false);
  attach_weights(a.y, w_obj, a.x.shape(0), func, false, a.keep_w);
  return a;
}

// A run that ended on something other than a refused step (NonFinite): an interruption, an
// index or label out of range, a single-sample BatchNorm batch; raised as Python exceptions.
template <typename T>
void raise_batch_error(Network<T>& net, const BatchRunResult& r, index_t n_rows,
                       const char* func) {
  raise_reducer_error(net);
  const std::string f(func);
  // interrupted between batches: the model holds the last completed step
  if (r.status == BatchStatus::Stopped) throw py::error_already_set();
  if (r.status == BatchStatus::BadIndex)
    throw py::value_error(f + ": order holds index " + std::to_string(r.bad_value) +
                          " outside [0, " + std::to_string(n_rows - 1) + "]");
  if (r.status == BatchStatus::SingleSampleBatch)
    throw py::value_error(
        f + ": batch " + std::to_string(r.bad_value) + " has a single sample, and BatchNorm1d "
        "needs more than 1 sample per batch in training; choose a batch_size that does not "
        "leave one sample over");
  if (r.status == BatchStatus::BadLabel)
    throw py::value_error(f + ": y holds class label " + std::to_string(r.bad_value) +
                          " outside the valid range [0, " +
                          std::to_string(net.out_features() - 1) + "]");
}

// The array that receives dL/dx (shaped like x) when wanted, else None; *dx points into it.
template <typename T>
py::object input_grad_array(bool wanted, const py::array_t<T, py::array::c_style>& x, T** dx) {
  if (!wanted) return py::none();
  py::array_t<T> out({x.shape(0), x.shape(1)});
  *dx = out.mutable_data();
  return out;
}

py::tuple step_tuple(const StepResult& r) { return py::make_tuple(r.loss, r.correct, r.finite); }

template <typename T>
void bind_network_class(py::module_& m, const char* name) {
  py::class_<Network<T>, NetPtr<T>>(m, name)
      .def(py::init([](std::vector<LayerSpec> layers) {
             try {
               return std::make_shared<Network<T>>(std::move(layers));
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           }),
           py::arg("layers"))
      .def_property_readonly("in_features", &Network<T>::in_features)
      .def_property_readonly("out_features", &Network<T>::out_features)
      .def_property_readonly("num_params", &Network<T>::num_params)
      .def("weight_view",
           [](const NetPtr<T>& net, std::size_t layer, bool grad) {
             const LayerSpec& s = net->specs().at(layer);
             if (net->param_count(layer) == 0) throw py::value_error("layer has no weight");
             T* base = (grad ? net->grads() : net->params()) + net->weight_offset(layer);
             if (s.kind == LayerKind::Dense)
               return view_of<T>(net, base,
                                 {py::ssize_t(s.in_features), py::ssize_t(s.out_features)});
             return view_of<T>(net, base, {py::ssize_t(s.in_features)});
           })
      .def("bias_view",
           [](const NetPtr<T>& net, std::size_t layer, bool grad) {
             const LayerSpec& s = net->specs().at(layer);
             if (net->param_count(layer) == 0) throw py::value_error("layer has no bias");
             T* base = (grad ? net->grads() : net->params()) + net->bias_offset(layer);
             return view_of<T>(net, base,
                               {py::ssize_t(s.kind == LayerKind::Dense ? s.out_features
                                                                        : s.in_features)});
           })
      .def("buffer_view",
           [](const NetPtr<T>& net, std::size_t layer, int k) {
             const LayerSpec& s = net->specs().at(layer);
             if (net->buffer_offset(layer) < 0 || k < 0 || k > 1)
               throw py::value_error("layer has no such buffer");
             return view_of<T>(net, net->buffers() + net->buffer_offset(layer) + k * s.in_features,
                               {py::ssize_t(s.in_features)});
           },
           "Non-trainable statistics: k = 0 BatchNorm running_mean / Normalization mean, k = 1 "
           "running_var / variance.")
      .def("seed_dropout", &Network<T>::seed_dropout, py::arg("seed"))
      .def_property(
          "dropout_rng_state",
          [](Network<T>& net) {
            const std::uint64_t* s = net.dropout_rng().state();
            return std::vector<std::uint64_t>(s, s + 4);
          },
          [](Network<T>& net, const std::vector<std::uint64_t>& state) {
            if (state.size() != 4) throw py::value_error("dropout_rng_state needs 4 integers");
            net.dropout_rng().set_state(state.data());
          })
      .def("_freeze_dropout_masks", &Network<T>::freeze_dropout_masks, py::arg("frozen"))
      .def_property_readonly("has_batchnorm", &Network<T>::has_batchnorm)
      .def("params_view",
           [](const NetPtr<T>& net) { return view_of<T>(net, net->params(), {net->num_params()}); })
      .def("grads_view",
           [](const NetPtr<T>& net) { return view_of<T>(net, net->grads(), {net->num_params()}); })
      .def("optimizer_state_view",
           [](const NetPtr<T>& net, int k) {
             if (k < 0 || k >= net->optimizer_state_buffers())
               throw py::value_error("optimizer state buffer index out of range");
             using Owner = std::shared_ptr<AlignedBuffer<T>>;
             py::capsule owner(new Owner(net->optimizer_state_owner()),
                               [](void* p) { delete static_cast<Owner*>(p); });
             return py::array(py::array_t<T>({net->num_params()}, net->optimizer_state(k),
                                             owner));
           })
      .def_property_readonly("optimizer_state_names", &Network<T>::optimizer_state_names)
      .def_property("optimizer_steps", &Network<T>::optimizer_steps,
                    &Network<T>::set_optimizer_steps)
      .def("set_loss",
           [](Network<T>& net, Loss loss, double huber_delta) {
             LossParams lp;
             lp.huber_delta = huber_delta;
             GilRelease release;  // (lock order: see the top)
             net.set_loss(loss, lp);
           },
           py::arg("loss"), py::arg("huber_delta") = 1.0)
      .def("set_clipping",
           [](Network<T>& net, double max_norm, double max_value) {
             ClipConfig c;
             c.max_norm = max_norm;
             c.max_value = max_value;
             GilRelease release;  // (lock order: see the top)
             net.set_clipping(c);
           },
           py::arg("max_norm"), py::arg("max_value"))
      .def_property_readonly("last_grad_norm", &Network<T>::last_grad_norm)
      .def_property_readonly("last_step_shards", &Network<T>::last_step_shards,
                             "How many parts the last training step cut its batch into (1 or 2)")
      .def("take_stats",
           [](Network<T>& net) {
             TrainStats s;
             {
               GilRelease release;  // (lock order: see the top)
               s = net.take_stats();
             }
             py::dict d;
             d["steps"] = s.steps;
             d["grad_norm_sum"] = s.grad_norm_sum;
             d["grad_norm_sq_sum"] = s.grad_norm_sq_sum;
             d["layer_grad_norm_sum"] = s.layer_grad_norm_sum;
             d["diag_steps"] = s.diag_steps;
             d["weight_norm_sum"] = s.weight_norm_sum;
             d["update_ratio_sum"] = s.update_ratio_sum;
             d["act_mean_sum"] = s.act_mean_sum;
             d["act_std_sum"] = s.act_std_sum;
             d["dead_frac_sum"] = s.dead_frac_sum;
             d["saturated_frac_sum"] = s.saturated_frac_sum;
             return d;
           },
           "Per-step statistics accumulated since the last call (steps, pre-clip gradient "
           "norms), then reset.")
      .def("regularization_loss", &Network<T>::regularization_loss,
           py::call_guard<GilRelease>())
      .def(
          "locked",
          [](Network<T>& net, const py::function& fn) {
            py::object result;
            {
              GilRelease release;  // (while waiting for a step in another thread)
              net.with_lock([&] {
                GilAcquire gil;
                result = fn();
              });
            }
            return result;
          },
          py::arg("fn"),
          "fn() called holding the network's lock (no step of another thread runs meanwhile); "
          "calling into this network from fn raises RuntimeError.")
      .def("set_sentinel", &Network<T>::set_sentinel, py::arg("on"))
      .def("set_diagnostics", &Network<T>::set_diagnostics, py::arg("on"),
           py::call_guard<GilRelease>())
      .def("set_stat_reducer",
           [](Network<T>& net, const py::object& fn, const std::vector<bool>& layers) {
             if (fn.is_none()) return net.set_stat_reducer(StatReducer{}, {}, nullptr);
             if (!PyCallable_Check(fn.ptr()))
               throw py::type_error("set_stat_reducer: fn must be a callable or None, got " +
                                    std::string(py::str(py::type::of(fn).attr("__name__"))));
             auto ctx = std::make_shared<PyStatReducer>();
             ctx->fn = fn;
             net.set_stat_reducer(StatReducer{reduce_in_python, ctx.get()}, layers, ctx);
           },
           py::arg("fn"), py::arg("layers") = std::vector<bool>{},
           "Synchronised BatchNorm: fn(values: float64 array, kind: int) sums the statistics "
           "of the BatchNorm layers flagged in `layers` over the replicas, in place, during "
           "training passes. None turns it off.")
      .def("sentinel_report",
           [](Network<T>& net) {
             const SentinelReport r = net.sentinel_report();
             static const char* names[] = {"none", "forward", "loss", "backward"};
             return py::make_tuple(names[int(r.pass)], r.layer);
           },
           "(pass, layer) of the first NaN/Inf the sentinel saw in the last step.")
      .def("forward_for_custom",
           [](Network<T>& net, const py::handle& x_obj) -> py::object {
             auto x = checked_inputs(net, x_obj, "train_step", true);
             py::array_t<T> out({x.shape(0), py::ssize_t(net.out_features())});
             T* out_ptr = out.mutable_data();
             bool ok;
             {
               GilRelease release;
               ok = net.forward_for_custom(x.data(), x.shape(0), out_ptr);
             }
             raise_reducer_error(net);
             if (!ok) return py::none();
             return out;
           })
      .def("backward_from",
           [](Network<T>& net, const py::handle& x_obj, const py::handle& dout_obj,
              bool want_dx) {
             auto x = checked_inputs(net, x_obj, "train_step", true);
             auto dout = require_array<T>(dout_obj, "custom loss", "gradient", 2);
             if (dout.shape(0) != x.shape(0) || dout.shape(1) != net.out_features())
               throw py::value_error("custom loss: the gradient must have the output's shape (" +
                                     std::to_string(x.shape(0)) + ", " +
                                     std::to_string(net.out_features()) + "), got " +
                                     shape_string(dout));
             T* dx = nullptr;
             py::object dx_obj = input_grad_array<T>(want_dx, x, &dx);
             StepResult r;
             {
               GilRelease release;
               r = net.backward_from(x.data(), x.shape(0), dout.data(), dx);
             }
             raise_reducer_error(net);
             return py::make_tuple(r.loss, r.finite, dx_obj);
           },
           py::arg("x"), py::arg("dout"), py::arg("want_dx") = false)
      .def("update",
           [](Network<T>& net) {
             GilRelease release;
             return net.update();
           },
           "The one update path: measure the gradients as they are now, then statistics, "
           "clipping and the optimizer rule. False (nothing applied) if a gradient is NaN/Inf.")
      .def("set_optimizer",
           [](Network<T>& net, const OptConfig& cfg) {
             try {
               GilRelease release;  // (lock order: see the top)
               net.set_optimizer(cfg);
             } catch (const std::invalid_argument& e) {
               throw py::value_error(e.what());
             }
           },
           py::arg("config"))
      .def("train_step",
           [](Network<T>& net, const py::handle& x_obj, const py::handle& y_obj,
              const py::object& w_obj) {
             auto x = checked_inputs(net, x_obj, "train_step", true);
             auto y = checked_targets(net, y_obj, x.shape(0), "train_step");
             py::object keep_w;
             attach_weights(y, w_obj, x.shape(0), "train_step", true, keep_w);
             StepResult r;
             {
               GilRelease release;
               r = net.train_step(x.data(), x.shape(0), y.targets);
             }
             raise_reducer_error(net);
             return step_tuple(r);
           },
           py::arg("x"), py::arg("y"), py::arg("sample_weight") = py::none())
      .def("compute_gradients",
           [](Network<T>& net, const py::handle& x_obj, const py::handle& y_obj, bool want_dx,
              const py::object& w_obj) {
             auto x = checked_inputs(net, x_obj, "compute_gradients", true);
             auto y = checked_targets(net, y_obj, x.shape(0), "compute_gradients");
             py::object keep_w;
             attach_weights(y, w_obj, x.shape(0), "compute_gradients", true, keep_w);
             T* dx = nullptr;
             py::object dx_obj = input_grad_array<T>(want_dx, x, &dx);
             StepResult r;
             {
               GilRelease release;
               r = net.compute_gradients(x.data(), x.shape(0), y.targets, dx);
             }
             raise_reducer_error(net);
             return py::make_tuple(r.loss, r.correct, r.finite, dx_obj);
           },
           py::arg("x"), py::arg("y"), py::arg("want_dx") = false,
           py::arg("sample_weight") = py::none())
      .def("train_batches",
           [](Network<T>& net, const py::handle& x_obj, const py::handle& y_obj,
              const py::object& order_obj, index_t batch_size, index_t first_batch,
              index_t n_batches, const py::object& w_obj) {
             if (first_batch < 0 || n_batches < 0)
               throw py::value_error("train_batches: the batch range must be non-negative");
             const FitArrays<T> a =
                 fit_arrays(net, x_obj, y_obj, w_obj, batch_size, "train_batches");
             const std::int64_t* order = nullptr;
             py::object order_keep;
             if (!order_obj.is_none()) {
               auto o = require_array<std::int64_t>(order_obj, "train_batches", "order", 1);
               if (o.shape(0) != a.x.shape(0))
                 throw py::value_error("train_batches: order must have one index per row of x");
               order = o.data();
               order_keep = o;
             }
             BatchRunResult r;
             {
               GilRelease release;
               r = net.train_batches(a.x.data(), a.x.shape(0), a.y.targets, order, batch_size,
                                     first_batch, n_batches, &kPythonSignals);
             }
             raise_batch_error(net, r, a.x.shape(0), "train_batches");
             return py::make_tuple(r.loss_sum, r.correct, r.batches_done,
                                   r.status == BatchStatus::Ok, r.failed_loss);
           },
           py::arg("x"), py::arg("y"), py::arg("order"), py::arg("batch_size"),
           py::arg("first_batch"), py::arg("n_batches"), py::arg("sample_weight") = py::none())
      .def("train_epochs",
           [](Network<T>& net, const py::handle& x_obj, const py::handle& y_obj,
              const py::object& seeds_obj, index_t batch_size, index_t epochs,
              const py::object& rule_obj, const py::object& w_obj) {
             if (epochs < 0) throw py::value_error("train_epochs: epochs must be >= 0");
             const FitArrays<T> a =
                 fit_arrays(net, x_obj, y_obj, w_obj, batch_size, "train_epochs");
             const index_t n = a.x.shape(0);
             const std::uint64_t* seeds = nullptr;
             py::object seeds_keep;
             if (!seeds_obj.is_none()) {
               auto s = require_array<std::uint64_t>(seeds_obj, "train_epochs", "seeds", 1);
               if (s.shape(0) != epochs)
                 throw py::value_error("train_epochs: seeds must hold one seed per epoch");
               seeds = s.data();
               seeds_keep = s;
             }
             PlateauRule rule;
             const bool with_rule = !rule_obj.is_none();
             if (with_rule) {  // (scale, tol, best, patience, count)
               const auto t = rule_obj.cast<std::tuple<double, double, double, std::int64_t,
                                                       std::int64_t>>();
               rule = {std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t),
                       std::get<4>(t)};
             }
             std::vector<std::int64_t> order(seeds ? std::size_t(n) : 0);
             py::array_t<double> losses(epochs);
             EpochRunResult r;
             {
               GilRelease release;
               r = net.train_epochs(a.x.data(), n, a.y.targets, seeds, order.data(), batch_size,
                                    epochs, with_rule ? &rule : nullptr, losses.mutable_data(),
                                    &kPythonSignals);
             }
             // the completed epochs' losses, and how the run ended: a stop, a refused step
             // (finite False) or a bad index/label raises, as from train_batches
             py::object done = losses[py::slice(0, r.epochs_done, 1)];
             py::object interrupt = py::none();  // handed back: the caller records the epochs
             if (r.failed.status == BatchStatus::Stopped) {  // done before it raises this
               raise_reducer_error(net);
               py::error_already_set pending;  // (fetches the signal handler's exception)
               interrupt = pending.value();
             } else if (r.failed.status != BatchStatus::NonFinite) {
               raise_batch_error(net, r.failed, n, "train_epochs");
             }
             const bool finite = r.failed.status != BatchStatus::NonFinite;
             return py::make_tuple(done, finite, r.failed.batches_done, r.failed.failed_loss,
                                   r.plateaued, interrupt, rule.best, rule.count);
           },
           py::arg("x"), py::arg("y"), py::arg("seeds"), py::arg("batch_size"),
           py::arg("epochs"), py::arg("rule") = py::none(),
           py::arg("sample_weight") = py::none())
      .def("predict",
           [](Network<T>& net, const py::handle& x_obj, const py::object& out_obj) {
             auto x = checked_inputs(net, x_obj, "predict");
             const py::ssize_t rows = x.shape(0), cols = py::ssize_t(net.out_features());
             py::array_t<T, py::array::c_style> out;
             if (out_obj.is_none()) {
               out = py::array_t<T, py::array::c_style>({rows, cols});
             } else {  // a caller's buffer, reused from call to call: no allocation per call
               out = require_array<T>(out_obj, "predict", "out", 2);
               if (out.shape(0) != rows || out.shape(1) != cols)
                 throw py::value_error("predict: out must have shape (" + std::to_string(rows) +
                                       ", " + std::to_string(cols) + "), got " +
                                       shape_string(out));
               if (!out.writeable())
                 throw py::value_error("predict: out must be writable (it is read-only)");
               const char* o = reinterpret_cast<const char*>(out.data());
               const char* xs = reinterpret_cast<const char*>(x.data());
               if (o < xs + x.nbytes() && xs < o + out.nbytes())
                 throw py::value_error("predict: out must not overlap x");
             }
             T* out_ptr = out.mutable_data();
             // A few microseconds of work (a service's single rows) keep the GIL: releasing and
             // taking it back would cost a tenth of the call.
             if (double(rows) * net.dense_work_per_row() <= kKeepGilWork &&
                 net.predict_if_free(x.data(), rows, out_ptr))
               return out;
             bool completed;
             {
               GilRelease release;
               completed = net.predict(x.data(), x.shape(0), out_ptr, &kPythonSignals);
             }
             if (!completed) throw py::error_already_set();
             return out;
           },
           py::arg("x"), py::arg("out") = py::none())
      .def("prepack_weights",
           [](Network<T>& net) {
             bool ok;
             {
               GilRelease release;
               ok = net.prepack_weights();
             }
             if (!ok) throw std::bad_alloc();
             return net.prepacked_bytes();
           },
           "Packs every Dense weight once for the running GEMM; inference then reads the packed "
           "copies until a training step drops them. Returns the packed bytes.")
      .def("drop_prepacked_weights", &Network<T>::drop_prepacked_weights)
      .def_property_readonly("prepacked_bytes", &Network<T>::prepacked_bytes)
      .def("forward_collect",
           [](Network<T>& net, const py::handle& x_obj) {
             auto x = checked_inputs(net, x_obj, "forward_collect");
             py::list result;
             std::vector<T*> outs;
             for (std::size_t j = 0; j < net.specs().size(); ++j) {
               py::array_t<T> out({x.shape(0), py::ssize_t(net.width_after(j))});
               outs.push_back(out.mutable_data());
               result.append(out);
             }
             {
               GilRelease release;
               net.forward_collect(x.data(), x.shape(0), outs);
             }
             return result;
           },
           "Every layer's output for one batch (a list of arrays, one per layer).")
      .def("evaluate", [](Network<T>& net, const py::handle& x_obj, const py::handle& y_obj,
                          const py::object& w_obj) {
        auto x = checked_inputs(net, x_obj, "evaluate");
        auto y = checked_targets(net, y_obj, x.shape(0), "evaluate");
        py::object keep_w;
        attach_weights(y, w_obj, x.shape(0), "evaluate", true, keep_w);
        StepResult r;
        bool stopped = false;
        {
          GilRelease release;
          r = net.evaluate(x.data(), x.shape(0), y.targets, &kPythonSignals, &stopped);
        }
        if (stopped) throw py::error_already_set();
        return step_tuple(r);
      }, py::arg("x"), py::arg("y"), py::arg("sample_weight") = py::none());
}

}  // namespace

void bind_network(py::module_& m) {
  m.def("shuffled_indices",
        [](std::uint64_t seed, index_t n, py::object out) {
          if (n < 0) throw py::value_error("shuffled_indices: n must be >= 0");
          py::array_t<std::int64_t, py::array::c_style> order;
          if (out.is_none()) {
            order = py::array_t<std::int64_t, py::array::c_style>(n);
          } else {  // fit's buffer, reused every epoch
            order = require_array<std::int64_t>(out, "shuffled_indices", "out", 1);
            if (order.shape(0) != n)
              throw py::value_error("shuffled_indices: out must have length n = " +
                                    std::to_string(n) + ", got shape " + shape_string(order));
            if (!order.writeable())
              throw py::value_error("shuffled_indices: out must be writable (it is read-only)");
          }
          std::int64_t* data = order.mutable_data();
          {
            GilRelease release;
            shuffled_indices(seed, data, n);
          }
          return order;
        },
        py::arg("seed"), py::arg("n"), py::arg("out") = py::none(),
        "A permutation of range(n) drawn from seed: the order fit uses for one epoch. Written "
        "into ``out`` (a writable C-contiguous int64 array of length n) when given.");
  bind_network_class<float>(m, "Network32");
  bind_network_class<double>(m, "Network64");
}

}  // namespace mlpcore::bindings
