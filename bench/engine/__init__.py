"""Engine benchmarks: seqserve's engine against its peers, side by side on the same weights.

Run `make bench` (quick mode) or `python -m bench.engine --help`.
"""
