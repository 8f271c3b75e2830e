"""Benchmarks: code plus their recorded results (`make bench`)."""
