"""``burla dashboard``: print (and open, where a browser exists) the dashboard URL."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse

from .. import _config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="print the current cluster's dashboard link (and open it)")
    p.add_argument("name", nargs="?")
    p.add_argument("--no-open", action="store_true", help="only print the link")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    record = _config.load_for_command(args.name, "dashboard")
    if record is None:
        return 1
    # The token rides in the fragment, which browsers never send to a server.
    url = f"{record.http}/login#token={urllib.parse.quote(record.token)}"
    print(url)
    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"
    if not args.no_open and graphical:
        import webbrowser

        webbrowser.open(url)
    return 0
