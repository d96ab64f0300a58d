"""Confinement of the files a tool may read or write to directories the user allowed.

    policy = PathPolicy(["data", "out"])
    policy.readable("data/scene.png")        # Path inside data/, or PathNotAllowedError
    policy.writable("out/annotated.png")     # parent folders are created inside out/

A relative path is taken relative to the first allowed directory. Every path is resolved
(symlinks followed, ``..`` collapsed) before it is checked, so neither ``../secret`` nor a
symlink inside an allowed directory pointing outside it gets through. With no allowed directory
every file access is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from visionllm2.sdk.errors import InvalidInputError

from .errors import PathNotAllowedError

#: Suffixes :meth:`PathPolicy.writable` accepts by default: pictures and JSON.
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".json")


class PathPolicy:
    """The directories tools may touch.

    Args:
        allowed_dirs: directories (created if missing); each is resolved once, here.
        suffixes: the file suffixes :meth:`writable` accepts (lower case, with the dot).
    """

    def __init__(self, allowed_dirs: Sequence[str | os.PathLike[str]] = (),
                 suffixes: Sequence[str] = WRITABLE_SUFFIXES) -> None:
        if isinstance(allowed_dirs, (str, os.PathLike)):
            allowed_dirs = [allowed_dirs]
        roots = []
        for directory in allowed_dirs:
            path = Path(directory)
            if path.exists() and not path.is_dir():
                raise InvalidInputError(f"allowed_dirs: expected directories, got the file {str(path)!r}")
            path.mkdir(parents=True, exist_ok=True)
            roots.append(path.resolve(strict=True))
        self.roots: tuple[Path, ...] = tuple(roots)
        self.suffixes = tuple(s.lower() for s in suffixes)

    def __repr__(self) -> str:
        return f"PathPolicy({[str(r) for r in self.roots]})"

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """The resolved path, if it lies inside an allowed directory; else :class:`PathNotAllowedError`."""
        if not self.roots:
            raise PathNotAllowedError(
                f"path: expected no file access (no directory is allowed), got {str(path)!r}; "
                "pass allowed_dirs=[...] to VisionToolkit to let tools read or write there"
            )
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise InvalidInputError(f"path: expected a non-empty file path, got {path!r}")
        raw = Path(path)
        candidate = raw if raw.is_absolute() else self.roots[0] / raw
        try:
            resolved = candidate.resolve(strict=False)  # follows symlinks, collapses '..'
        except (OSError, RuntimeError, ValueError) as error:  # a NUL byte, a symlink loop
            raise InvalidInputError(f"path: expected a usable file path, got {str(path)!r} ({error})") from None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise PathNotAllowedError(
                f"path: expected a file inside {[str(r) for r in self.roots]}, got {str(path)!r}, which resolves "
                f"to {str(resolved)!r}; use a path inside an allowed directory"
            )
        return resolved

    def readable(self, path: str | os.PathLike[str]) -> Path:
        """An existing file inside an allowed directory."""
        resolved = self.resolve(path)
        if not resolved.is_file():
            listing = sorted(p.name for p in resolved.parent.iterdir())[:20] if resolved.parent.is_dir() else []
            raise InvalidInputError(
                f"path: expected an existing file, got {str(path)!r} (nothing there); files beside it: {listing}"
            )
        return resolved

    def writable(self, path: str | os.PathLike[str]) -> Path:
        """A file path inside an allowed directory with an accepted suffix; its folders are created."""
        resolved = self.resolve(path)
        if resolved.suffix.lower() not in self.suffixes:
            raise InvalidInputError(
                f"path: expected a file ending in one of {list(self.suffixes)}, got {str(path)!r}"
            )
        if resolved.is_dir():
            raise InvalidInputError(f"path: expected a file name, got the directory {str(path)!r}")
        resolved.parent.mkdir(parents=True, exist_ok=True)
        return resolved
