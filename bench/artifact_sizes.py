"""Deployment size of every function and of the layer, from a real `sam build` (arm64, no Docker).

Figures: unzipped bytes on disk and the zip Lambda receives (deflate, as `sam deploy` packages it),
beside Lambda's limits (50 MB zipped direct upload, 250 MB unzipped for a function with its layers).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAM = ROOT / ".tools" / "sam" / "bin" / "sam"
UNZIPPED_LIMIT = 250 * 1024 * 1024


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def zipped_size(path: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(path))
    return buffer.tell()


def main() -> int:
    sam = str(SAM) if SAM.exists() else "sam"
    with tempfile.TemporaryDirectory() as build_dir:
        env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
        done = subprocess.run([sam, "build", "--build-dir", build_dir, "--region", "us-east-1"], cwd=ROOT,
                              capture_output=True, text=True, env=env)
        if done.returncode:
            print(done.stdout[-2000:], done.stderr[-2000:])
            return 1
        built = sorted(p for p in Path(build_dir).iterdir() if p.is_dir())
        print("deployment sizes (sam build, arm64):")
        layer = 0
        for artifact in built:
            unzipped, zipped = tree_size(artifact), zipped_size(artifact)
            if artifact.name.endswith("Layer"):
                layer = unzipped
            print(f"  {artifact.name:<20} {unzipped / 1024:9.0f} KiB unzipped  {zipped / 1024:8.0f} KiB zipped")
        print(f"  a function with the layer uses {layer / UNZIPPED_LIMIT:.1%} of Lambda's 250 MB unzipped limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
