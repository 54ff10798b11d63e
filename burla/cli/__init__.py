"""The ``burla`` command: parse arguments, hand over to one module per command."""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from . import _dashboard, _down, _head, _image, _jobs, _node, _status, _supervise, _up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="burla", description="Run Python functions over many inputs on a cluster.")
    parser.add_argument("--version", action="version", version=f"burla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (_up, _down, _status, _jobs, _dashboard, _image, _head, _node, _supervise):
        module.add_parser(sub)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
