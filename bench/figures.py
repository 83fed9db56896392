"""Every figure in the README, docs/benchmarks.md and docs/model-card.md, with the command that
produced it: the nearest ```bash block, or inline `python ...` / `inspector ...` command, above it
within its section (a heading of the same or a higher level ends the search). Figures with no command in reach are listed apart: each is either
given a command or moved to a dated history section.

    python bench/figures.py            # a table per document, then the figures without a command
    python bench/figures.py --missing  # only those

A figure is a number with a unit or a decimal point (12.3, 0.39x, 84 frames/s, 5 s, 286 MB, 97 %),
in prose or tables; version numbers, dates, sizes in pixels and code are skipped.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/benchmarks.md", "docs/model-card.md")
FIGURE = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*(?:\.\d+)?)\s*(x|×|%|ms|s|MB|GB|KB|fps|frames/s|images/s|crops/s|"
                    r"min(?:utes)?|h(?:ours)?|km|m)?(?![\w.])")
SKIP = re.compile(r"\d{4}-\d{2}-\d{2}|\d+\.\d+\.\d+|\d+×\d+|\d+x\d+|CC BY(?:-SA)? \d\.\d")  # dates, versions, sizes, licences


@dataclass(frozen=True)
class Figure:
    document: str
    line: int
    text: str
    command: str | None


def figures(document: Path) -> list[Figure]:
    out: list[Figure] = []
    command: str | None = None
    level_of_command = current_level = 1
    in_code, block, block_is_bash = False, [], False
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```"):
            if in_code and block_is_bash:
                command, level_of_command = " && ".join(b.strip() for b in block if b.strip()
                                                         and not b.lstrip().startswith("#")), current_level
            in_code, block, block_is_bash = not in_code, [], line.strip() in ("```bash", "```sh")
            continue
        if in_code:
            block.append(line)
            continue
        heading = re.match(r"(#+) ", line)
        if heading:
            current_level = len(heading.group(1))
            if command is not None and current_level <= level_of_command:
                command = None
            continue
        inline = [c for c in re.findall(r"`([^`]*)`", line) if c.startswith(("python ", "inspector ", "CI="))]
        if inline:
            command, level_of_command = inline[-1], current_level
        cleaned = SKIP.sub(" ", re.sub(r"`[^`]*`", " ", line))
        for match in FIGURE.finditer(cleaned):
            value, unit = match.groups()
            if unit is None and "." not in value:
                continue  # a bare whole number: a count, an id, a step, not a measured figure
            out.append(Figure(document.name, number, match.group(0).strip(), command))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missing", action="store_true", help="only figures with no command in reach")
    args = parser.parse_args()
    missing = 0
    for name in DOCUMENTS:
        found = figures(ROOT / name)
        without = [f for f in found if f.command is None]
        missing += len(without)
        print(f"\n## {name}: {len(found)} figures, {len(without)} without a command")
        for f in without if args.missing else found:
            print(f"{f.line:5d}  {f.text:<14} {f.command or '(no command)'}")
    print(f"\n{missing} figures without a command")
    return 0


if __name__ == "__main__":
    sys.exit(main())
