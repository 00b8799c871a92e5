# Compile options shared by every target of ours (not by third-party code).
add_library(tollgate_options INTERFACE)
target_compile_options(tollgate_options INTERFACE -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)
# GCC 12 reports false -Wrestrict/-Wstringop-overflow positives inside libstdc++'s std::string at
# -O2 (GCC bug 105329); they are not about our code.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(tollgate_options INTERFACE -Wno-restrict -Wno-stringop-overflow)
  # ... and -Wmismatched-new-delete on Asio's recycling coroutine-frame allocator at -O3.
  target_compile_options(tollgate_options INTERFACE -Wno-mismatched-new-delete)
endif()
if(TOLLGATE_WERROR)
  target_compile_options(tollgate_options INTERFACE -Werror)
endif()
# Asio and Beast are compiled once, in src/boost_impl (see docs/architecture.md).
target_compile_definitions(tollgate_options INTERFACE
  BOOST_ASIO_SEPARATE_COMPILATION
  BOOST_BEAST_SEPARATE_COMPILATION
  BOOST_ASIO_NO_DEPRECATED
  TOLLGATE_VERSION="${PROJECT_VERSION}")
if(TOLLGATE_SANITIZE)
  target_compile_options(tollgate_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                         -fno-sanitize-recover=undefined)
  target_link_options(tollgate_options INTERFACE -fsanitize=address,undefined)
endif()
