"""Study files too large, binary or odd to commit as text (see tests/test_hostile.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

GOOD = """name: h
design:
  array: L9(3^4)
  factors:
    - name: learning_rate
      levels: [0.01, 0.001, 0.0001]
    - name: optimizer
      levels: [adadelta, adam, adagrad]
data:
  patch_size: 32
"""


def _study(work: Path) -> Path:
    return work / "study.yaml"


def deep_nesting(work: Path) -> None:
    """Python's recursion limit is about 1000 frames; YAML's composer recurses per level."""
    _study(work).write_text("name: h\ndesign: " + "[" * 5000 + "]" * 5000 + "\n")


def deep_mapping(work: Path) -> None:
    _study(work).write_text("name: h\ndesign: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")


def utf16_bom(work: Path) -> None:
    """What Windows editors save as "Unicode"."""
    _study(work).write_bytes(GOOD.encode("utf-16"))


def latin1(work: Path) -> None:
    _study(work).write_bytes((GOOD + "description: étude de référence\n").encode("latin-1"))


def binary_junk(work: Path) -> None:
    _study(work).write_bytes(bytes(random.Random(0).randrange(128, 256) for _ in range(4096)))


def nul_byte(work: Path) -> None:
    _study(work).write_bytes(GOOD.encode() + b"description: a\x00b\n")


def huge_file(work: Path) -> None:
    _study(work).write_text(GOOD + "description: >\n" + ("  " + "z" * 78 + "\n") * 14000)


def a_folder(work: Path) -> None:
    _study(work).mkdir()


def unreadable(work: Path) -> None:
    """A study whose read fails (a dangling symbolic link: permissions do not stop root)."""
    os.symlink(work / "gone" / "study.yaml", _study(work))


def very_long_key(work: Path) -> None:
    _study(work).write_text(GOOD + "k" * 5000 + ": 1\n")


def very_long_level(work: Path) -> None:
    _study(work).write_text(GOOD.replace("[adadelta, adam, adagrad]", "[adam, sgd, " + "x" * 20000 + "]"))


def huge_description(work: Path) -> None:
    _study(work).write_text(GOOD + "description: " + "d" * 11000 + "\n")


def long_number(work: Path) -> None:
    """Python refuses to parse integers of more than 4300 digits (a ValueError, not YAML's)."""
    _study(work).write_text(GOOD.replace("[0.01, 0.001, 0.0001]", "[1, 2, " + "9" * 5000 + "]"))
