# Shared compiler settings and the helpers every directory uses.

set(CLOUDLET_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND CLOUDLET_WARNINGS -Wshadow=local)
else()
  # clang (the fuzz build): the same shadowing check; RapidJSON 1.1's iterator comparisons predate C++20.
  list(APPEND CLOUDLET_WARNINGS -Wshadow-uncaptured-local -Wno-ambiguous-reversed-operator)
endif()
if(CLOUDLET_WERROR)
  list(APPEND CLOUDLET_WARNINGS -Werror)
endif()
# C++ code linked into a plugin must not define GNU unique symbols (abi/: they would pin the plugin in memory).
# GCC makes them for inline statics; clang never does and has no such option.
set(CLOUDLET_NO_GNU_UNIQUE $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-fno-gnu-unique>)

set(CLOUDLET_SANITIZE_FLAGS "")
set(asan_flags -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
if(CLOUDLET_SANITIZE STREQUAL "address")
  set(CLOUDLET_SANITIZE_FLAGS ${asan_flags})
elseif(CLOUDLET_SANITIZE STREQUAL "thread")
  set(CLOUDLET_SANITIZE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT CLOUDLET_SANITIZE STREQUAL "")
  message(FATAL_ERROR "CLOUDLET_SANITIZE must be '', 'address' or 'thread'")
endif()
if(CLOUDLET_FUZZ)
  # libFuzzer (clang only): every library gets coverage instrumentation, and ASan+UBSan unless another
  # sanitizer was asked for; the fuzz targets link the fuzzer's main (tests/fuzz).
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CLOUDLET_FUZZ needs clang (make fuzz sets CC=clang-14 CXX=clang++-14)")
  endif()
  if(NOT CLOUDLET_SANITIZE_FLAGS)
    set(CLOUDLET_SANITIZE_FLAGS ${asan_flags})
  endif()
  list(APPEND CLOUDLET_SANITIZE_FLAGS -fsanitize=fuzzer-no-link
       -fsanitize-ignorelist=${PROJECT_SOURCE_DIR}/tests/fuzz/ubsan_ignore.txt)
endif()
if(CLOUDLET_SANITIZE_FLAGS)
  add_compile_options(${CLOUDLET_SANITIZE_FLAGS})
  add_link_options(${CLOUDLET_SANITIZE_FLAGS})
endif()

# cloudlet_add_plugin(<name> SOURCES <files...> [LIBS <libs...>] [OUTPUT_DIR <dir>])
# Builds build/plugins/<name>.so with the ABI's rules: hidden visibility, no undefined symbols (a plugin
# reaches the core only through the function table), private static dependencies, no GNU unique symbols, and
# a version script that exports cloudlet_plugin_v1 alone (tests/abi checks every built plugin with nm -D).
function(cloudlet_add_plugin name)
  cmake_parse_arguments(P "" "OUTPUT_DIR" "SOURCES;LIBS" ${ARGN})
  set(install_plugin OFF)
  if(NOT P_OUTPUT_DIR)
    set(P_OUTPUT_DIR ${CMAKE_BINARY_DIR}/plugins)
    set(install_plugin ON)
  endif()
  add_library(${name} MODULE ${P_SOURCES})
  set_property(GLOBAL APPEND PROPERTY CLOUDLET_PLUGIN_TARGETS ${name})  # tests/abi checks every one
  if(install_plugin)
    # Real plugins are installed where cloudletd looks by default (core/daemon.cc: default_plugin_dir).
    install(TARGETS ${name} LIBRARY DESTINATION lib/cloudletd/plugins)
  endif()
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIR}
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/abi)
  target_compile_options(${name} PRIVATE ${CLOUDLET_WARNINGS} ${CLOUDLET_NO_GNU_UNIQUE})
  if(NOT CLOUDLET_SANITIZE_FLAGS)
    # Sanitizer runtimes live in the executable, so -z defs cannot hold for sanitized plugins.
    target_link_options(${name} PRIVATE -Wl,-z,defs)
  endif()
  target_link_options(${name} PRIVATE -Wl,--exclude-libs,ALL
                      -Wl,--version-script=${PROJECT_SOURCE_DIR}/cmake/plugin_exports.map)
  set_property(TARGET ${name} APPEND PROPERTY LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/plugin_exports.map)
  if(P_LIBS)
    target_link_libraries(${name} PRIVATE ${P_LIBS})
  endif()
endfunction()

# cloudlet_add_test(<name> SOURCES <files...> [LIBS <libs...>] [LABELS <labels...>] [TIMEOUT <s>])
# A GoogleTest executable registered with ctest.
function(cloudlet_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_compile_options(${name} PRIVATE ${CLOUDLET_WARNINGS})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main GTest::gmock)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "CLOUDLET_SOURCE_DIR=${PROJECT_SOURCE_DIR};CLOUDLET_BUILD_DIR=${CMAKE_BINARY_DIR}")
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()
