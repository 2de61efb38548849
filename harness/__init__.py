"""What bench/ and tests/ share: a real `python -m service` process on free ports (server_process),
the asyncio load generator (loadgen), /proc probes of a process (procstat), a /metrics reader
(metrics_reader) and the tiny seeded models exported with the real exporter (tiny_models, which
imports torch: import it lazily).

bench/ and tests/ import this package and never each other.
"""
