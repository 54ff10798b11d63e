"""Throughput harness: burla against the tools its users would otherwise pick."""
