"""Results tables that cannot be committed as text (see tests/test_hostile.py)."""

from __future__ import annotations

import random
from pathlib import Path


def binary(work: Path) -> None:
    (work / "r.csv").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(2048)))


def utf16(work: Path) -> None:
    (work / "r.csv").write_bytes("a,b,y\n1,x,1.5\n2,y,2.5\n".encode("utf-16"))


def folder(work: Path) -> None:
    (work / "r.csv").mkdir()
