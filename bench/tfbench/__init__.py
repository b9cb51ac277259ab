"""Helpers for bench/run.py (trainflow performance benchmarks). Not part of the library.

bench/ is put on PYTHONPATH before Ray starts, so Ray workers can unpickle the probe callbacks
defined here.
"""
