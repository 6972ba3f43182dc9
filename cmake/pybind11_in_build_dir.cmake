# pip builds in an isolated environment whose path changes on every run. Compiled against
# pybind11's headers there, every object's command line and header dependencies would change
# too, and a second `pip install .` would recompile everything in the stable build directory
# (pyproject.toml: build-dir). So the headers are copied into the build directory, rewriting a
# file only when its content changed, and the pybind11 targets point there.
set(MLPCORE_PYBIND11_INCLUDE "${CMAKE_BINARY_DIR}/pybind11-include")
file(GLOB_RECURSE _mlpcore_pybind11_headers RELATIVE "${pybind11_INCLUDE_DIR}"
     "${pybind11_INCLUDE_DIR}/pybind11/*")
foreach(_header IN LISTS _mlpcore_pybind11_headers)
  # COPYONLY leaves an unchanged file (and its timestamp) alone
  configure_file("${pybind11_INCLUDE_DIR}/${_header}" "${MLPCORE_PYBIND11_INCLUDE}/${_header}"
                 COPYONLY)
endforeach()
foreach(_target pybind11::pybind11_headers pybind11::headers)
  if(TARGET ${_target})
    get_target_property(_aliased ${_target} ALIASED_TARGET)
    if(NOT _aliased)
      set_property(TARGET ${_target} PROPERTY INTERFACE_INCLUDE_DIRECTORIES
                   "${MLPCORE_PYBIND11_INCLUDE}")
    endif()
  endif()
endforeach()
