"""The chaos run's parts (scripts/chaos.py): processes, faults, visitors, the probe, checks, report."""
