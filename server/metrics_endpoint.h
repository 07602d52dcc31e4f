// The HTTP endpoint Prometheus scrapes: GET /metrics in the text exposition format.
//
// prometheus-cpp's own exposer (civetweb) cannot run next to LibTorch from Debian: civetweb's
// threads get a fixed 100 KiB stack, less than the ~108 KiB of static TLS that LibTorch's
// dependencies bring, so they fail to start. This endpoint serialises the same registry.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include <prometheus/registry.h>

#include "absl/status/statusor.h"

namespace streamkv::server {

// One thread answering one connection at a time (scrapes are rare and small), each closed after
// its answer. Thread-safe to start and stop.
class MetricsEndpoint {
 public:
  // Listens on `address` ("host:port", "[v6]:port"; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsEndpoint();  // stops serving

  int port() const { return port_; }

 private:
  MetricsEndpoint(int listen_fd, int port, int wake_read, int wake_write,
                  std::shared_ptr<prometheus::Registry> registry);
  void Serve();
  void Answer(int fd);

  const int listen_fd_;
  const int port_;
  const int wake_read_;   // becomes readable when the endpoint stops
  const int wake_write_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::thread thread_;
};

}  // namespace streamkv::server
