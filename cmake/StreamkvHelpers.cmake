# streamkv_add_library(<component> SOURCES ... DEPS ...): the library target streamkv_<component>
# with alias streamkv::<component>, rooted at the repository so includes read "cache/kv_cache.h".
function(streamkv_add_library component)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  set(target streamkv_${component})
  add_library(${target} ${ARG_SOURCES})
  add_library(streamkv::${component} ALIAS ${target})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${target} PUBLIC ${ARG_DEPS})
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  streamkv_precompile_aten(${target})
endfunction()

# ATen's headers dominate compile time on small machines; precompile them once per target.
function(streamkv_precompile_aten target)
  target_precompile_headers(${target} PRIVATE <ATen/ATen.h>)
endfunction()

# streamkv_add_test(<name> SOURCES ... DEPS ... [LABELS ...]): one GoogleTest binary, registered
# test by test with CTest.
include(GoogleTest)
function(streamkv_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  target_compile_options(${name} PRIVATE -Wall -Wextra)
  streamkv_precompile_aten(${name})
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "${ARG_LABELS}")
endfunction()

# streamkv_add_proto_library(<target> ROOT <dir> PROTOS <file.proto>...): C++ messages and gRPC
# stubs generated from protos under ROOT (import paths relative to it) into the build tree.
function(streamkv_add_proto_library target)
  cmake_parse_arguments(ARG "" "ROOT" "PROTOS" ${ARGN})
  set(generated_dir ${CMAKE_CURRENT_BINARY_DIR}/generated)
  file(MAKE_DIRECTORY ${generated_dir})
  set(generated_sources)
  foreach(proto ${ARG_PROTOS})
    file(RELATIVE_PATH relative ${ARG_ROOT} ${proto})
    string(REGEX REPLACE "\\.proto$" "" stem ${relative})
    set(outputs ${generated_dir}/${stem}.pb.cc ${generated_dir}/${stem}.pb.h
                ${generated_dir}/${stem}.grpc.pb.cc ${generated_dir}/${stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND protobuf::protoc
      ARGS --proto_path=${ARG_ROOT} --cpp_out=${generated_dir} --grpc_out=${generated_dir}
           --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin> ${proto}
      DEPENDS ${proto} protobuf::protoc gRPC::grpc_cpp_plugin
      COMMENT "protoc ${relative}")
    list(APPEND generated_sources ${outputs})
  endforeach()
  add_library(${target} ${generated_sources})
  target_include_directories(${target} SYSTEM PUBLIC ${generated_dir})
  target_link_libraries(${target} PUBLIC protobuf::libprotobuf gRPC::grpc++)
endfunction()
