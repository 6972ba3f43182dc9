#include "isa_regions.hpp"

#include "gemm/ukernel.hpp"

namespace mlpcore {

ElementwiseIsa elementwise_isa() noexcept {
  // isa_active() only returns an ISA this CPU supports, so the copy can run here.
  switch (gemm::isa_active()) {
    case gemm::Isa::Avx512:
      if (elementwise_avx512_compiled()) return ElementwiseIsa::Avx512;
      return elementwise_avx2_compiled() ? ElementwiseIsa::Avx2 : ElementwiseIsa::Baseline;
    case gemm::Isa::Avx2:
      return elementwise_avx2_compiled() ? ElementwiseIsa::Avx2 : ElementwiseIsa::Baseline;
    case gemm::Isa::Portable: return ElementwiseIsa::Baseline;
  }
  return ElementwiseIsa::Baseline;
}

const char* elementwise_isa_name(ElementwiseIsa isa) noexcept {
  switch (isa) {
    case ElementwiseIsa::Baseline: return "baseline";
    case ElementwiseIsa::Avx2: return "avx2";
    case ElementwiseIsa::Avx512: return "avx512";
  }
  return "baseline";
}

}  // namespace mlpcore
