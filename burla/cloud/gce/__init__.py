"""Compute Engine provider: node VMs (and optionally the head) on Google Cloud."""
