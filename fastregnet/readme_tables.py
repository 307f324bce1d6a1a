"""Generated README sections: the text between a pair of HTML-comment markers, rewritten by the script that owns
it (campaign-apply's GPU table, bench/host_overhead.py's table), so the tables cannot go stale by hand."""

from __future__ import annotations

import re


def replace_between(path: str, begin: str, end: str, body: str) -> None:
    """Rewrite what stands between `begin` and `end` in the file at `path` with `body`."""
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise ValueError(f"{path}: no {begin} ... {end} markers")
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S)
    with open(path, "w") as f:
        f.write(text)
