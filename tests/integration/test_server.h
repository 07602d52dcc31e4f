// An in-process server on the built-in tiny model, listening on loopback, and helpers to talk
// to it through the client library.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/client.h"
#include "client/frame_source.h"
#include "server/server.h"

namespace streamkv::testing {

// Frames of this size pass through the tiny model (width 112) without resizing: 4 patch rows.
inline constexpr int64_t kFrameHeight = 56;
inline constexpr int64_t kFrameWidth = 112;
inline constexpr int64_t kTinyLayers = 4;
inline constexpr int64_t kTinyTokensPerFrame = 5 + 4 * 8;
inline constexpr int64_t kTinyTrunkLayers = 4;  // 1 trunk block × 4 camera-head iterations

// Options for tests: loopback, a free port, no background reaper, a manual clock.
server::ServerOptions TestServerOptions(server::ManualClock* clock);

// Starts a server (the options' clock must outlive it); fails the test when it cannot start.
std::unique_ptr<server::Server> StartTestServer(const server::ServerOptions& options);

// A client of `server`.
std::unique_ptr<client::Client> ConnectTo(const server::Server& server,
                                          const std::string& bearer_token = "");

// A raw RGB frame of the test size with sequence number `sequence`.
v1::Frame RawFrame(uint64_t sequence, int64_t height = kFrameHeight, int64_t width = kFrameWidth);

// An OpenSession for the tiny model.
v1::OpenSession TinyOpen(const std::string& policy = "none",
                         std::map<std::string, std::string> params = {});

// Reads answers until one for a frame (result or error) arrives; fails the test otherwise.
v1::StreamResponse ReadAnswer(client::SessionStream& stream);

// Opens a session, streams `frames` frames, ends it; returns the number of results.
int StreamFreshSession(client::Client& client, int frames = 2);

// The value of the metric line `series` (e.g. `streamkv_kv_cache_used_bytes`) in the server's
// /metrics text; NaN when absent.
double MetricValue(const server::Server& server, const std::string& series);

// The server's /metrics text, fetched over HTTP.
std::string ScrapeMetrics(const server::Server& server);

// A TCP forwarder on a loopback port to `target_port`, standing in for a load balancer in front
// of one replica. Close() drops every connection and stops listening. Thread-safe.
class TcpForwarder {
 public:
  explicit TcpForwarder(int target_port);
  ~TcpForwarder();
  int port() const { return port_; }
  void Close();

 private:
  void AcceptLoop();
  void Pump(int client, int upstream);

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::mutex mu_;
  std::vector<int> sockets_;  // guarded by mu_
  bool closed_ = false;       // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace streamkv::testing
