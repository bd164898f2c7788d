"""Protocol v1 of Tidings, sans-I/O: wire messages, codes and the connection state machine."""
