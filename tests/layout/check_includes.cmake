# Fails on an include inside runtime/ that points up the layers of
# DESIGN.md ("Dependencies point one way"): base (the files at runtime/'s top)
# <- config <- engine <- algorithms <- drivers, transport <- run. A file may
# include its own layer and those below; drivers and transport are siblings.
# The includes that still point up are listed below, each with what removes
# it; the check also fails when a listed one is gone, so the list only shrinks.
# And no runtime/ source over 500 lines.
# Run: cmake -DROOT=<source dir> -P check_includes.cmake
cmake_minimum_required(VERSION 3.16)
set(known_upward
  # SwarmSGD and device sync run the worker step themselves (the Algorithm interface).
  "algorithms/device_sync.h -> drivers/worker.h"
  "algorithms/swarm.h -> drivers/driver.h"
  "algorithms/swarm.h -> drivers/worker.h"
  "algorithms/swarm.cc -> drivers/driver.h"
  "algorithms/swarm.cc -> drivers/event_queue.h"
)

function(layer_of path out)
  string(REGEX MATCH "^[^/]+/" top "${path}")
  if(top STREQUAL "")
    set(${out} 0 PARENT_SCOPE)
  elseif(top STREQUAL "config/")
    set(${out} 1 PARENT_SCOPE)
  elseif(top STREQUAL "engine/")
    set(${out} 2 PARENT_SCOPE)
  elseif(top STREQUAL "algorithms/")
    set(${out} 3 PARENT_SCOPE)
  elseif(top STREQUAL "drivers/" OR top STREQUAL "transport/")
    set(${out} 4 PARENT_SCOPE)
  elseif(top STREQUAL "run/")
    set(${out} 5 PARENT_SCOPE)
  else()
    set(${out} -1 PARENT_SCOPE)
  endif()
endfunction()

file(GLOB_RECURSE sources RELATIVE "${ROOT}/runtime" "${ROOT}/runtime/*.h" "${ROOT}/runtime/*.cc")
set(found "")
set(errors "")
foreach(src IN LISTS sources)
  layer_of("${src}" from)
  if(from EQUAL -1)
    string(APPEND errors "runtime/${src}: in no layer of DESIGN.md (expected runtime/ or one of config, engine, algorithms, drivers, transport, run)\n")
    continue()
  endif()
  file(READ "${ROOT}/runtime/${src}" text)
  string(REGEX MATCHALL "\n" newlines "${text}")
  list(LENGTH newlines count)
  if(count GREATER 500)
    string(APPEND errors "runtime/${src}: ${count} lines, over the 500 a source file may have\n")
  endif()
  file(STRINGS "${ROOT}/runtime/${src}" lines REGEX "^#include \"runtime/")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^#include \"runtime/([^\"]+)\".*" "\\1" inc "${line}")
    layer_of("${inc}" to)
    if(to GREATER from)
      set(edge "${src} -> ${inc}")
      list(APPEND found "${edge}")
      if(NOT edge IN_LIST known_upward)
        string(APPEND errors "runtime/${src} includes runtime/${inc}: an include up the layers (${from} -> ${to})\n")
      endif()
    endif()
  endforeach()
endforeach()
foreach(edge IN LISTS known_upward)
  if(NOT edge IN_LIST found)
    string(APPEND errors "listed as an upward include but gone: ${edge} (remove it from tests/layout/check_includes.cmake)\n")
  endif()
endforeach()
list(LENGTH found n)
if(errors)
  message(FATAL_ERROR "${errors}")
endif()
message(STATUS "runtime/ includes point down the layers but the ${n} listed")
