"""What a visitor may read of a message: the one line, without the server's filesystem paths.

Our one-line errors are written for whoever runs the command, so many name a file
("SRCNN weights /srv/t2i/checkpoints/upscale/srcnn_x4.pth are missing: run ..."). The same line
reaches visitors through a job's error field (the executor writes it; the gallery, the Queue page and
the Generate page show it) and through the Generate page's "Not submitted" line. A path there tells a
stranger the server's layout and user names, so such text passes through `for_visitor`: each absolute
path is cut to its last part ("…/srcnn_x4.pth", enough to say which file), and the full line goes to
the operator's log.

    for_visitor(text)     the text with paths cut; logged whole (logger "t2i.visitor_text") when cut
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("t2i.visitor_text")

# An absolute POSIX path of two or more parts. Not after a word character, ':', '/' or '.', so URLs
# ("https://host/a/b"), fractions ("1/2") and relative paths ("configs/x.yaml", which name the
# project's files, not the server's) stay. Parts stop at whitespace and the quotes and punctuation
# that surround a path in a message; the pattern has no nested repetition, so it runs in linear time
# on any text (a message may quote a visitor's prompt).
PATH = re.compile(r"(?<![\w:/.~])~?/(?:[^\s/'\"`,;:()\[\]<>|]+/+)+([^\s/'\"`,;:()\[\]<>|]*)")
CUT = "\u2026/"  # "…/": the reader sees that something was left out
MAX_CHARS = 2000  # a visitor's page gets one line; a longer text is cut here (the log keeps it whole)


def for_visitor(text: str) -> str:
    """`text` with every absolute path cut to its last part, and at most MAX_CHARS characters."""
    text = "" if text is None else str(text)
    shown = PATH.sub(lambda m: CUT + m.group(1) if m.group(1) else CUT.rstrip("/"), text)
    if len(shown) > MAX_CHARS:
        shown = shown[:MAX_CHARS - 3] + "..."
    if shown != text:
        log.warning("shown to visitors as %r; in full: %s", shown, text)
    return shown
