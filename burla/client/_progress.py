"""A rich progress bar (done/total, rate, ETA) when stdout is a terminal."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, name: str, total: int | None, enabled: bool):
        self._bar: Any = None
        if not enabled or not sys.stdout.isatty():
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn(f"[bold]{name}[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"), TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task(name, total=total, rate="")
        self._bar.start()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            task = self._bar.tasks[0]
            speed = task.speed
            self._bar.update(self._task, advance=n, rate=f"{speed:,.0f}/s" if speed else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
