# Sources of the GEMM module, appended to MLPCORE_GEMM_SOURCES by the top-level CMakeLists.txt.
# Only the micro-kernel and AVX-512 packing files get ISA flags; the driver picks one at run
# time (dispatch.cpp).
list(APPEND MLPCORE_GEMM_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/gemm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gemm_reference.cpp
  ${CMAKE_CURRENT_LIST_DIR}/dispatch.cpp
  ${CMAKE_CURRENT_LIST_DIR}/ukernel_portable.cpp
  ${CMAKE_CURRENT_LIST_DIR}/ukernel_avx2.cpp
  ${CMAKE_CURRENT_LIST_DIR}/ukernel_avx512.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pack_avx512.cpp

  ${CMAKE_CURRENT_LIST_DIR}/cache_blocking.cpp)

# The per-ISA flags, also used by the element-wise ISA copies (top-level CMakeLists.txt).
set(MLPCORE_AVX2_FLAGS)
set(MLPCORE_AVX512_FLAGS)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i.86)$" AND
   CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(MLPCORE_AVX2_FLAGS "-mavx2;-mfma")
  set(MLPCORE_AVX512_FLAGS "-mavx512f;-mavx512dq;-mavx512vl;-mavx512bw;-mfma;-mavx2")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/ukernel_avx2.cpp
    PROPERTIES COMPILE_OPTIONS "${MLPCORE_AVX2_FLAGS}")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/ukernel_avx512.cpp
    ${CMAKE_CURRENT_LIST_DIR}/pack_avx512.cpp
    PROPERTIES COMPILE_OPTIONS "${MLPCORE_AVX512_FLAGS}")
endif()
