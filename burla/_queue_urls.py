"""The URL schemes that name a Redis queue backend: shared by cluster.yaml's ``queue.url`` and the
head's ``--queue`` (a leaf module: loading a cluster.yaml must not import the head)."""

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
