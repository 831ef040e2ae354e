"""The request's code as highlighted HTML lines, with the review's findings on their lines.

The code is the researcher's: every character of it is escaped here (the lexer only
decides which ``<span class>`` wraps which escaped piece), so a ``</pre><script>`` in a
comment stays text. Highlighting is pygments' Python lexer, coloured by the short
token classes of pygments' HTML formatter (the colours are in ``static/console.css``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pygments.lexers.python import PythonLexer
from pygments.token import STANDARD_TYPES, _TokenType

MAX_LINES = 5000  # a code request longer than this is shown cut, with a note (the page stays fast)


@dataclass(frozen=True)
class CodeLine:
    """One line of code, ready for the template.

    Parameters
    ----------
    number : int
        1-based.
    html : str
        The line, escaped and highlighted (safe to insert as is).
    findings : tuple of dict
        The review's findings on this line (``severity``, ``rule``, ``message``, ``column``).
    """

    number: int
    html: str
    findings: tuple[Mapping[str, Any], ...] = ()

    @property
    def severity(self) -> str:
        """``"error"`` if any finding here is an error, ``"warning"`` for warnings only, else ``""``."""
        severities = {str(finding.get("severity", "error")) for finding in self.findings}
        return "error" if "error" in severities else ("warning" if severities else "")


def code_lines(code: str, findings: Sequence[Mapping[str, Any]] = ()) -> list[CodeLine]:
    """The code as highlighted, escaped lines, each with its findings.

    Parameters
    ----------
    code : str
        The request's source code.
    findings : sequence of mapping
        The review's findings (``line`` 1-based; others are kept as given). A finding on a
        line past the end is put on the last line, so it is never lost.

    Returns
    -------
    list of CodeLine
        One per line of ``code`` (at most ``MAX_LINES``).

    Examples
    --------
    >>> lines = code_lines("import os  # </pre><script>\\nx = 1\\n", [{"line": 1, "message": "imports os"}])
    >>> print(lines[0].html.replace("</span>", "</span>\\n"))
    <span class="kn">import</span>
     <span class="nn">os</span>
      <span class="c1"># &lt;/pre&gt;&lt;script&gt;</span>
    >>> [(line.number, len(line.findings)) for line in lines]
    [(1, 1), (2, 0)]
    """
    rows: list[list[str]] = [[]]
    for token, value in PythonLexer(stripnl=False, ensurenl=False).get_tokens(code):
        css = _css_class(token)
        for index, piece in enumerate(value.split("\n")):
            if index:
                rows.append([])
            if piece:
                text = html.escape(piece, quote=False)
                rows[-1].append(f'<span class="{css}">{text}</span>' if css else text)
    if rows and not rows[-1] and code.endswith("\n"):
        rows.pop()  # the newline ends the last line; it does not start an empty one
    rows = rows[:MAX_LINES] or [[]]
    by_line: dict[int, list[Mapping[str, Any]]] = {}
    for finding in findings:
        try:
            number = int(finding.get("line") or 1)
        except (TypeError, ValueError):
            number = 1
        by_line.setdefault(min(max(number, 1), len(rows)), []).append(finding)
    return [
        CodeLine(number, "".join(parts), tuple(by_line.get(number, ())))
        for number, parts in enumerate(rows, start=1)
    ]


def _css_class(token: _TokenType) -> str:
    """Pygments' short class of a token (its nearest ancestor that has one); "" for plain text."""
    while token is not None:
        css = STANDARD_TYPES.get(token)
        if css is not None:
            return "" if css == "w" else css  # whitespace needs no span
        token = token.parent
    return ""
