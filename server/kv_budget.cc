#include "server/kv_budget.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace streamkv::server {

KvBudget::Reservation& KvBudget::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    if (budget_ != nullptr) budget_->Release(bytes_);
    budget_ = std::exchange(other.budget_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

KvBudget::Reservation::~Reservation() {
  if (budget_ != nullptr) budget_->Release(bytes_);
}

absl::StatusOr<KvBudget::Reservation> KvBudget::Reserve(int64_t bytes) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("KV budget: cannot reserve ", bytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  if (bytes > total_ - reserved_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV budget: the session asks for ", bytes, " bytes but only ", total_ - reserved_,
        " of the server's ", total_, " bytes are free (", reserved_, " reserved by open sessions)"));
  }
  reserved_ += bytes;
  ChangedLocked();
  return Reservation(this, bytes);
}

int64_t KvBudget::reserved() const {
  absl::MutexLock lock(&mu_);
  return reserved_;
}

bool KvBudget::AwaitReservedAtMost(int64_t bytes, absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto small_enough = [this, bytes]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return reserved_ <= bytes; };
  return mu_.AwaitWithDeadline(absl::Condition(&small_enough), deadline);
}

void KvBudget::Release(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  reserved_ -= bytes;
  ChangedLocked();
}

void KvBudget::ChangedLocked() {
  if (on_change_) on_change_(reserved_);
}

}  // namespace streamkv::server
