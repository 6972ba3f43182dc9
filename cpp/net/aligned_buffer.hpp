// A fixed-capacity, 64-byte aligned, zero-initialised buffer: one allocation, never moved, so
// NumPy views of it stay valid for the buffer's lifetime.
#pragma once
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/common.hpp"

namespace mlpcore {

// A request for more memory than the machine has (MemoryError in Python, with this message).
// Overcommit would grant such an allocation and the kernel kill the process when its pages are
// touched, so it is refused before it is made.
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The machine's RAM in bytes (0: unknown).
double physical_memory_bytes() noexcept;

// Throws OutOfMemory naming `what` and `advice` (what to change) if `bytes` exceed the RAM.
void check_fits_in_memory(double bytes, const std::string& what, const char* advice);

template <typename T>
class AlignedBuffer {
 public:
  static constexpr std::size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(index_t n) { reset(n); }

  // Reallocates to n zeroed elements (old contents and views are dropped). A count past
  // kMaxElements throws std::bad_alloc (MemoryError in Python) instead of wrapping around.
  void reset(index_t n) {
    data_.reset();
    size_ = 0;
    if (n <= 0) return;
    if (n > kMaxElements) throw std::bad_alloc();
    void* p = ::operator new(std::size_t(n) * sizeof(T), std::align_val_t(kAlignment));
    std::memset(p, 0, std::size_t(n) * sizeof(T));
    data_.reset(static_cast<T*>(p));
    size_ = n;
  }
  void zero() noexcept {
    if (size_ > 0) std::memset(data_.get(), 0, std::size_t(size_) * sizeof(T));
  }

  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  index_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(T* p) const noexcept { ::operator delete(p, std::align_val_t(kAlignment)); }
  };
  std::unique_ptr<T, Free> data_;
  index_t size_ = 0;
};

}  // namespace mlpcore
