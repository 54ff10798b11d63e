"""Docker provider: the head, nodes and workers as containers on a private network."""
