"""What the command line shows a person: data as data.

Names, segments, reasons and paths come from customers' data and from the command line, and may hold
anything: Rich markup (`[/]Acme` raised Rich's MarkupError after a plan was stored), emoji codes, or
terminal escapes (ANSI colours, OSC titles and links) that would reach the terminal raw. `PlainConsole`
reads no markup or emoji code in any text it is given, and drops control characters from every
string it renders, table cells included; the doors' own emphasis is built as `rich.text.Text` with
styles (`styled`), never as markup.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

# An escape sequence whole (CSI, OSC up to its terminator, or ESC and one character), then any other
# C0 or C1 control character or DEL; newline and tab are kept.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-_]?"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def plain(value: object) -> str:
    """`value` as text a terminal shows as it is: without escape sequences or control characters."""
    return _CONTROL.sub("", str(value))


def styled(value: object, style: str) -> Text:
    """`plain(value)` in a Rich style (never read as markup)."""
    return Text(plain(value), style=style)


class PlainConsole(Console):
    """A Rich console that reads no markup or emoji code and renders every string through `plain`."""

    def __init__(self, **kwargs: Any) -> None:
        # No source path column in `log` lines: it means nothing to a user, and on a narrow terminal
        # it lands inside a wrapped message.
        super().__init__(markup=False, emoji=False, highlight=False, log_path=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(plain(text), **kwargs)


def show_left_out(console: Console, left_out: dict[str, int]) -> None:
    """One line per kind of row the reader left out (`usecases.left_out_words`): a command that
    leaves rows out says so, whatever it was asked."""
    for what, count in left_out.items():
        console.print(styled(f"Left out: {count:,} {what}", "yellow"))
