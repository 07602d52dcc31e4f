# Third-party packages. The core (kernels, cache, models) needs LibTorch and Abseil; tests need
# GoogleTest, benchmarks Google Benchmark; the server adds gRPC, Protobuf and prometheus-cpp.
find_package(Torch REQUIRED)
find_package(absl REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(Threads REQUIRED)
if(STREAMKV_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(STREAMKV_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()

# LibTorch as one imported target, carrying its ABI flag and include directories.
if(NOT TARGET streamkv_torch)
  add_library(streamkv_torch INTERFACE)
  target_link_libraries(streamkv_torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(streamkv_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  separate_arguments(_streamkv_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(streamkv_torch INTERFACE ${_streamkv_torch_flags})
  add_library(streamkv::torch ALIAS streamkv_torch)
endif()

if(STREAMKV_BUILD_SERVER)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_package(prometheus-cpp CONFIG REQUIRED)
endif()
