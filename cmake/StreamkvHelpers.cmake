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
