"""Node daemon and worker processes."""
