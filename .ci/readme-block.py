#!/usr/bin/env python3
"""Prints one fenced ```sh block of README.md: the first one (the run and test commands) with `commands`, or the
one under a heading with `section HEADING`. .ci/run runs what the README says, exactly as written."""
import re
import sys
from pathlib import Path

readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
blocks = [(m.start(), m.group(1)) for m in re.finditer(r"```sh\n(.*?)```", readme, re.S)]
if sys.argv[1:] == ["commands"]:
    print(blocks[0][1], end="")
elif len(sys.argv) == 3 and sys.argv[1] == "section":
    heading = readme.find("\n## " + sys.argv[2] + "\n")
    if heading < 0:
        sys.exit(f"README.md has no section '## {sys.argv[2]}'")
    print(next(text for at, text in blocks if at > heading), end="")
else:
    sys.exit("usage: readme-block.py commands | section HEADING")
