# serve_bench.cmake — serve_load_bench (bench/serve/serve_load.cpp): the load generator that
# bench/serve/serve_load.sh runs against `stagformer serve`. Included by CMakeLists.txt.
# A client only: cpp-httplib and nlohmann-json, nothing of the engine.
add_executable(serve_load_bench ${CMAKE_CURRENT_LIST_DIR}/serve_load.cpp)
target_link_libraries(serve_load_bench PRIVATE PkgConfig::HTTPLIB nlohmann_json::nlohmann_json)
