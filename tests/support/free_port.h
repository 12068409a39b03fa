// free_port.h — a TCP port that is free on this host right now (for rendezvous tests).
#pragma once

namespace sf::test {

// Asks the kernel for an unused port (bind to port 0) and releases it. Another process could
// take it before the caller binds it; the window is tiny and tests accept it.
int free_tcp_port();

}  // namespace sf::test
