"""Reliability load generator and process probes shared by tests/system and bench/perf."""
