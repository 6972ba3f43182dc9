// A fixed-capacity, 64-byte aligned, zero-initialised buffer: one allocation, never moved, so
// NumPy views of it stay valid for the buffer's lifetime.
#pragma once
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>

#include "kernels/common.hpp"

namespace mlpcore {

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
