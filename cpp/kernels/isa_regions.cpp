#include "isa_regions.hpp"

#include "gemm/ukernel.hpp"

namespace mlpcore {

bool use_avx512_elementwise() noexcept {
  return MLPCORE_AVX512_REGIONS && gemm::isa_active() == gemm::Isa::Avx512;
}

}  // namespace mlpcore
