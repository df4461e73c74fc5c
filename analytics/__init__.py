"""Pure cores of chatd's analytics (no I/O): their services feed them events and a clock."""
