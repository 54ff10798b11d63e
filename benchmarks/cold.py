"""W5: a fresh interpreter until the first result (engine start included).

The parent times from Popen to the "FIRST" line.
"""

import sys

from .engines import ENGINES
from .tasks import identity


def main() -> None:
    engine = ENGINES[sys.argv[1]](int(sys.argv[2]))
    engine.start()
    out = engine.map(identity, list(range(10)))
    assert list(out) == list(range(10))
    print("FIRST", flush=True)
    engine.stop()


if __name__ == "__main__":  # engines that spawn workers re-import this module
    main()
