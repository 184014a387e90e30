"""Build small wheels from source text and install them, offline, into a site-packages directory.

A wheel is a zip archive with a ``.dist-info`` directory (PEP 427); pip installs one from a
local file without an index. Tests use this to put an application and the libraries it calls
where pip puts real ones, so nothing tells them apart by path.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Mapping
from pathlib import Path


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(directory: Path, name: str, files: Mapping[str, str], version: str = "1.0") -> Path:
    """A pure-Python wheel of distribution ``name`` holding ``files`` (path -> source text)."""
    info = f"{name}-{version}.dist-info"
    contents = {path: text.encode() for path, text in files.items()}
    contents[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    ).encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(path, data) for path, data in contents.items()]
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in sorted(contents.items()):
            archive.writestr(path, data)
    return wheel


def site_packages(root: Path) -> Path:
    """A directory laid out (and named) like a virtual environment's site-packages."""
    version = sysconfig.get_python_version()
    return root / "lib" / f"python{version}" / "site-packages"


def pip_install(wheels: list[Path], target: Path) -> None:
    """Install ``wheels`` into ``target`` with this interpreter's pip, offline."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *map(str, wheels),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
