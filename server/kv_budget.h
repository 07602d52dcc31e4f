// The server-wide key/value cache budget that sessions reserve from when they are admitted.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace streamkv::server {

// Bytes of KV cache the server lets its sessions hold, handed out as reservations: the sum of
// live reservations never exceeds the total. Thread-safe.
class KvBudget {
 public:
  // A session's share; returned to the budget when destroyed. Move-only.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept { *this = std::move(other); }
    Reservation& operator=(Reservation&& other) noexcept;
    ~Reservation();
    int64_t bytes() const { return bytes_; }

   private:
    friend class KvBudget;
    Reservation(KvBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
    KvBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // `on_change(reserved)` runs after every change (under the budget's lock: keep it cheap).
  explicit KvBudget(int64_t total_bytes, std::function<void(int64_t)> on_change = {})
      : total_(total_bytes), on_change_(std::move(on_change)) {}

  // RESOURCE_EXHAUSTED saying how much is free when `bytes` do not fit; InvalidArgument for
  // negative bytes.
  absl::StatusOr<Reservation> Reserve(int64_t bytes);

  int64_t total() const { return total_; }
  int64_t reserved() const;
  // Waits until at most `bytes` are reserved, or until `deadline`; true when they are.
  bool AwaitReservedAtMost(int64_t bytes, absl::Time deadline) const;

 private:
  void Release(int64_t bytes);

  void ChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t total_;
  const std::function<void(int64_t)> on_change_;
  mutable absl::Mutex mu_;
  int64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace streamkv::server
