"""Benchmarks: speed and memory of any preset (speed, against the usual loops in reference, drawn by plot)
and the offline worlds' quality benches (shapes, digits, flowers), each judged without the model."""
