"""Benchmarks of protocolkit: a synthetic NCT03918265 study and ``python -m bench.run``."""
