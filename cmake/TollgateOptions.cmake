# tollgate_build: what every target needs to link with the rest (definitions, sanitizers),
# third-party sources included (src/boost_impl).
add_library(tollgate_build INTERFACE)
# Asio and Beast are compiled once, in src/boost_impl (see docs/architecture.md).
target_compile_definitions(tollgate_build INTERFACE
  BOOST_ASIO_SEPARATE_COMPILATION
  BOOST_BEAST_SEPARATE_COMPILATION
  BOOST_ASIO_NO_DEPRECATED
  TOLLGATE_VERSION="${PROJECT_VERSION}")
if(TOLLGATE_SANITIZE)
  target_compile_options(tollgate_build INTERFACE -fsanitize=address,undefined
                         -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(tollgate_build INTERFACE -fsanitize=address,undefined)
endif()

# tollgate_options: tollgate_build plus the warnings our own code must pass (-Werror in CI).
add_library(tollgate_options INTERFACE)
target_link_libraries(tollgate_options INTERFACE tollgate_build)
target_compile_options(tollgate_options INTERFACE -Wall -Wextra -Wpedantic
                       -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 false positives, all inside library headers rather than our code: -Wrestrict and
  # -Wstringop-overflow in libstdc++'s std::string at -O2 (GCC bug 105329), and
  # -Wmismatched-new-delete on Asio's recycling coroutine-frame allocator at -O3.
  target_compile_options(tollgate_options INTERFACE -Wno-restrict -Wno-stringop-overflow
                         -Wno-mismatched-new-delete)
  if(TOLLGATE_SANITIZE)
    # ASan's instrumentation makes GCC's flow analysis report -Wmaybe-uninitialized in Beast's
    # parser and boost::optional (documented GCC behaviour with -fsanitize).
    target_compile_options(tollgate_options INTERFACE -Wno-maybe-uninitialized)
  endif()
endif()
if(TOLLGATE_WERROR)
  target_compile_options(tollgate_options INTERFACE -Werror)
endif()
