"""The official 7B state-dict manifests (keys, shapes, dtypes; no weights) that the 7b preset and the
converter are checked against.

They live beside the checkout in ``../shared/official``. A clone without that folder (CI on another
machine) reads the gzipped copies kept in ``data/official``, so the checks run everywhere; a test
keeps the copies equal to the originals where both are present.
"""

from __future__ import annotations

import gzip
from pathlib import Path

BESIDE = Path(__file__).resolve().parents[2].parent / "shared" / "official"
COPIES = Path(__file__).parent / "data" / "official"
MANIFESTS = ("visionllmv2_7b_state_dict_manifest.json", "visionllmv2_7b_state_dict_manifest.safetensors_dedup.json")


def official_folder(scratch: Path) -> Path:
    """``../shared/official`` when it holds the manifests, else ``scratch`` with the copies unpacked."""
    if all((BESIDE / name).is_file() for name in MANIFESTS):
        return BESIDE
    for name in MANIFESTS:
        (scratch / name).write_bytes(gzip.decompress((COPIES / f"{name}.gz").read_bytes()))
    return scratch
