#include "server/kv_budget.h"

#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace streamkv::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(KvBudgetTest, ReservesUpToExactlyTheTotal) {
  KvBudget budget(1000);
  absl::StatusOr<KvBudget::Reservation> first = budget.Reserve(600);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->bytes(), 600);
  absl::StatusOr<KvBudget::Reservation> rest = budget.Reserve(400);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(budget.reserved(), 1000);
  EXPECT_EQ(budget.total(), 1000);
}

TEST(KvBudgetTest, RefusesWhatDoesNotFitAndSaysWhatIsFree) {
  KvBudget budget(1000);
  absl::StatusOr<KvBudget::Reservation> held = budget.Reserve(600);
  ASSERT_TRUE(held.ok());
  absl::StatusOr<KvBudget::Reservation> refused = budget.Reserve(500);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("asks for 500 bytes but only 400 of the server's 1000 bytes are free "
                        "(600 reserved"));
  EXPECT_EQ(budget.reserved(), 600);
}

TEST(KvBudgetTest, RefusesANegativeReservation) {
  KvBudget budget(1000);
  absl::StatusOr<KvBudget::Reservation> negative = budget.Reserve(-100);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(budget.reserved(), 0);
  EXPECT_FALSE(budget.Reserve(1001).ok());  // the total still holds
}

TEST(KvBudgetTest, ReservationReturnsItsBytesWhenDestroyed) {
  KvBudget budget(1000);
  {
    absl::StatusOr<KvBudget::Reservation> reservation = budget.Reserve(700);
    ASSERT_TRUE(reservation.ok());
    EXPECT_EQ(budget.reserved(), 700);
  }
  EXPECT_EQ(budget.reserved(), 0);
}

TEST(KvBudgetTest, MoveAssignmentReleasesTheReservationItOverwrites) {
  KvBudget budget(1000);
  KvBudget::Reservation a = *budget.Reserve(300);
  KvBudget::Reservation b = *budget.Reserve(200);
  a = std::move(b);
  EXPECT_EQ(budget.reserved(), 200);
  EXPECT_EQ(a.bytes(), 200);
  EXPECT_EQ(b.bytes(), 0);  // a moved-from reservation is empty
}

TEST(KvBudgetTest, MovedFromReservationReleasesNothing) {
  KvBudget budget(1000);
  std::optional<KvBudget::Reservation> source(*budget.Reserve(300));
  KvBudget::Reservation target(std::move(*source));
  source.reset();
  EXPECT_EQ(budget.reserved(), 300);
  EXPECT_EQ(target.bytes(), 300);
}

TEST(KvBudgetTest, EmptyReservationReleasesNothing) {
  KvBudget budget(1000);
  KvBudget::Reservation held = *budget.Reserve(100);
  { KvBudget::Reservation empty; }
  EXPECT_EQ(budget.reserved(), 100);
}

TEST(KvBudgetTest, OnChangeSeesEveryChangeButNotARefusal) {
  std::vector<int64_t> seen;
  KvBudget budget(1000, [&seen](int64_t reserved) { seen.push_back(reserved); });
  std::optional<KvBudget::Reservation> a(*budget.Reserve(100));
  std::optional<KvBudget::Reservation> b(*budget.Reserve(50));
  EXPECT_FALSE(budget.Reserve(900).ok());
  a.reset();
  b.reset();
  EXPECT_THAT(seen, ElementsAre(100, 150, 50, 0));
}

TEST(KvBudgetTest, AwaitReservedAtMostAnswersAtOnceWhenSatisfied) {
  KvBudget budget(1000);
  EXPECT_TRUE(budget.AwaitReservedAtMost(0, absl::InfinitePast()));
  KvBudget::Reservation held = *budget.Reserve(100);
  EXPECT_TRUE(budget.AwaitReservedAtMost(100, absl::InfinitePast()));
}

TEST(KvBudgetTest, AwaitReservedAtMostIsFalseAtAPastDeadline) {
  KvBudget budget(1000);
  KvBudget::Reservation held = *budget.Reserve(100);
  EXPECT_FALSE(budget.AwaitReservedAtMost(99, absl::Now() - absl::Seconds(1)));
}

TEST(KvBudgetTest, AwaitReservedAtMostWakesWhenAReservationGoes) {
  KvBudget budget(1000);
  std::optional<KvBudget::Reservation> held(*budget.Reserve(100));
  std::thread releaser([&held] { held.reset(); });
  EXPECT_TRUE(budget.AwaitReservedAtMost(0, absl::InfiniteFuture()));
  releaser.join();
}

}  // namespace
}  // namespace streamkv::server
