# client_tests.cmake — CTest registrations of `stagformer serve` tested with clients this project
# did not write (included from CMakeLists.txt). Each runs tests/clients/run_client_test.sh on the
# built binary: it makes a tiny model, starts the server, runs the client, stops the server.
#   ServeClients.OpenAiNpmPackage   the official `openai` npm package (openai_client_test.mjs)
#   ServeClients.HeadlessChromium   Debian's Chromium, headless, using the page at /
#                                   (browser_page_test.mjs); screenshot: test-artifacts/serve-page.png
# They need node, the npm packages in tests/clients/node_modules and chromium, which
# scripts/setup.sh installs; without them they fail with a message saying so (CI runs setup.sh).
if(NOT TARGET stagformer)
  return()
endif()

set(SF_CLIENT_TEST_ARTIFACTS ${CMAKE_BINARY_DIR}/test-artifacts)
foreach(client_test "OpenAiNpmPackage;openai" "HeadlessChromium;browser")
  list(GET client_test 0 test_name)
  list(GET client_test 1 client)
  add_test(NAME ServeClients.${test_name}
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/run_client_test.sh $<TARGET_FILE:stagformer> ${client}
                   ${SF_CLIENT_TEST_ARTIFACTS})
  # TIMEOUT above the driver's own limits (100 s for the client, 30 s for the server's stop), so
  # that a hang is reported by the driver, with the server's log, before CTest kills it.
  set_tests_properties(ServeClients.${test_name} PROPERTIES LABELS cpu TIMEOUT 180)
endforeach()
