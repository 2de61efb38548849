"""The ceiling benchmark: the service, exactly as `make serve` starts it, beside the in-process engine
built with the same settings, on the same workload (`python -m bench.ceiling --help`)."""
