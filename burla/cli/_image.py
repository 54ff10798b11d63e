"""``burla image build [--base IMAGE] [--tag TAG]``: the node/worker image, offline."""

from __future__ import annotations

import argparse
import sys

from .._errors import ProviderError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help="build burla's node/worker image (no registry needed)")
    isub = p.add_subparsers(dest="image_command", metavar="build", required=True)
    b = isub.add_parser("build", help="build the image")
    b.add_argument("--base", default=None, help="base image with Python >= 3.10 (default python:3.11-slim, "
                   "else a local Debian base)")
    b.add_argument("--tag", default=None, help="image tag (default burla:VERSION)")
    b.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..cloud.docker._image import IMAGE, build_image

    try:
        tag = build_image(args.base, args.tag or IMAGE, log=lambda s: print(s, file=sys.stderr))
    except ProviderError as e:
        print(f"burla image build: {e}", file=sys.stderr)
        return 1
    print(tag)
    return 0
