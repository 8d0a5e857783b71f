"""Sweeps: which runs are pending (pending), one lock per run (locks), the loop with progress and Ctrl-C
handling (driver), and the backends that execute runs (local subprocesses, Ray tasks)."""
