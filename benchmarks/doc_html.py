"""Put a docs/ report's hand-written header (title, command, reading) into the run's report.html.

    python benchmarks/doc_html.py docs/NAME.md results/RUN/report.html docs/NAME.html
"""
import html
import re
import sys
from pathlib import Path

md, src, out = map(Path, sys.argv[1:4])
text = md.read_text()
head = text.split("\n\nMade with (latest command on this run folder):")[0]
title, *blocks = head.split("\n\n")


def inline(s: str) -> str:
    s = html.escape(s, quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s, flags=re.S)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    s = re.sub(r"\[(.+?)\]\((.+?)\)", r'<a href="\2">\1</a>', s)
    return s


parts = [f"<h1>{inline(title.lstrip('# '))}</h1>"]
for b in blocks:
    if b.startswith("    "):
        parts.append(f"<pre>{html.escape(b.strip())}</pre>")
    elif b.startswith(">"):
        parts.append(f"<p class='rec'>{inline(b.lstrip('> ').replace(chr(10) + '> ', ' '))}</p>")
    else:
        parts.append(f"<p style='max-width:900px'>{inline(b)}</p>")
page = src.read_text()
page, n = re.subn(r"<h1>.*?</h1>", lambda m: "\n".join(parts), page, count=1, flags=re.S)
assert n == 1
out.write_text(page)
