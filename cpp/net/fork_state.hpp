// Forks this process went through, for the networks' call locks. A thread that held a
// network's lock when another thread forked does not exist in the child, so the lock is never
// released there and the network may be half-way through a step: calls into it in the child
// raise instead of waiting forever. The module registers the two handlers with pthread_atfork.
#pragma once
#include <atomic>
#include <cstdint>
#include <thread>

namespace mlpcore {

struct ForkState {
  std::atomic<std::uint64_t> generation{0};       // forks into this process: 1 in a child
  std::atomic<std::thread::id> forking_thread{};  // the one thread a child starts with
};

inline ForkState& fork_state() noexcept {
  static ForkState state;
  return state;
}

inline void note_fork_prepare() noexcept {
  fork_state().forking_thread.store(std::this_thread::get_id());
}

inline void note_fork_in_child() noexcept { fork_state().generation.fetch_add(1); }

}  // namespace mlpcore
