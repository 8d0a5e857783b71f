"""Sweep backends: local subprocesses and Ray."""
