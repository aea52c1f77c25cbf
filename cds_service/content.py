"""Where the clinical content folders are: inside the installed package, or the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def content_dir(name: str) -> Path:
    """`cards` or `valuesets`: shipped inside the package by the wheel, at the repo root in a
    source checkout (pyproject maps the root folders into the package when it builds)."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ content folder is missing from the installation")
