// The server side of one Stream call (gRPC callback API).
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/service_env.h"
#include "server/session.h"
#include "streamkv/v1/streamkv.grpc.pb.h"

namespace streamkv::server {

// Reads requests, admits or resumes the session, feeds frames into its queue (and stops reading
// while the queue is full), writes answers one at a time, and ends the call. gRPC owns it until
// OnDone; sessions and tasks may hold it longer, but after the call is finished nothing reaches
// gRPC any more. Never blocks: model work runs on the scheduler. Thread-safe.
//
// Locks: mu_ may be held while taking a session's or the scheduler's lock, never while calling
// another sink. gRPC operations start under mu_, so none can start after the call finished
// (gRPC never runs a server reaction inline from StartRead/StartWrite/Finish, so this cannot
// deadlock).
class StreamReactor final
    : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>,
      public SessionSink,
      public std::enable_shared_from_this<StreamReactor> {
 public:
  // Creates the reactor for `call` and starts it.
  static StreamReactor* Start(const ServiceEnv* env, grpc::CallbackServerContext* call);

  // SessionSink.
  void Attached(std::vector<std::shared_ptr<const v1::StreamResponse>> messages) override;
  void FrameDone(std::shared_ptr<const v1::StreamResponse> response) override;
  void QueueSpace() override;
  void Detached(const grpc::Status& status) override;

  // grpc::ServerBidiReactor.
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  enum class Phase { kAwaitingOpen, kOpening, kStreaming, kEnding, kFinished };

  // gRPC operations decided under mu_ and started after releasing it.
  struct Ops {
    const v1::StreamResponse* write = nullptr;
    bool read = false;
    std::optional<grpc::Status> finish;
  };

  StreamReactor(const ServiceEnv* env, grpc::CallbackServerContext* call);
  void Begin();
  void Run(const Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void HandleOpen(const v1::OpenSession& open);  // on a worker: model code
  void HandleResume(const v1::ResumeSession& resume);
  void HandleRequestLocked(Ops& ops, bool& end_session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleReadsDoneLocked(Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CancelLocked(Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After the client's EndSession, once every frame is answered: true when the caller must
  // free the session (outside mu_).
  bool MaybeEndLocked(Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndSession();

  // Detaches the session from this stream, if it still exists and carries it.
  void DetachLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PushLocked(std::shared_ptr<const v1::StreamResponse> message, Ops& ops)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadLocked(Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const grpc::Status& status, Ops& ops) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ServiceEnv* const env_;
  grpc::CallbackServerContext* const call_;
  v1::StreamRequest request_;  // filled by the one read in flight

  absl::Mutex mu_;
  std::shared_ptr<StreamReactor> self_ ABSL_GUARDED_BY(mu_);  // gRPC's reference, until OnDone
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kAwaitingOpen;
  // The session this stream carries. Weak: the SessionManager alone keeps sessions alive, so
  // freeing one returns its memory at once (or when a worker finishes its frame).
  std::weak_ptr<Session> session_ ABSL_GUARDED_BY(mu_);
  std::string session_id_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<const v1::StreamResponse>> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;    // writes_.front() is being written
  bool reading_ ABSL_GUARDED_BY(mu_) = false;    // a read is in flight
  bool paused_ ABSL_GUARDED_BY(mu_) = false;     // reading waits for queue space
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false; // the client closed its side
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  int64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0; // frames enqueued and not yet answered
  std::optional<grpc::Status> finish_status_ ABSL_GUARDED_BY(mu_);  // finish once writes drain
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
};

// The bearer-token check shared by every handler: UNAUTHENTICATED unless `call` carries
// "authorization: Bearer <token>" (or no token is configured).
grpc::Status CheckBearerToken(const ServiceEnv& env, const grpc::CallbackServerContext& call);

}  // namespace streamkv::server
