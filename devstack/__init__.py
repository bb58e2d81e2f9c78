"""The local stack behind `make run`, and the real servers the tests start: no cluster, no containers."""
