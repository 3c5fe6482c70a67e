"""PEP 517 build backend of the onbehalf client: setuptools, with a standard-library fallback.

setuptools builds the wheel whenever it can (setuptools >= 70.1, or any setuptools with the ``wheel`` package).
Older setuptools without ``wheel`` — common on machines without a package index, where
``pip install --no-build-isolation ./clients/python`` cannot fetch it — cannot build wheels at all; this module
then builds the (pure-Python, dependency-free) wheel itself with ``zipfile``. Both produce the same package.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setuptools_can_build_wheels() -> bool:
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return False
    try:
        import setuptools.command.bdist_wheel  # noqa: F401  (setuptools >= 70.1)
        return True
    except ImportError:
        pass
    try:
        import wheel.bdist_wheel  # noqa: F401
        return True
    except ImportError:
        return False


if _setuptools_can_build_wheels():
    from setuptools.build_meta import *  # noqa: F401,F403
else:

    def _project() -> dict[str, str]:
        with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
            text = f.read()
        fields = {}
        for key in ("name", "version", "description", "requires-python"):
            m = re.search(rf'^{re.escape(key)} = "([^"]*)"', text, re.M)
            if m is None:
                raise RuntimeError(f"pyproject.toml has no {key}")
            fields[key] = m.group(1)
        extras = re.search(r'^autogen = \[(.*)\]', text, re.M)
        fields["autogen"] = extras.group(1) if extras else ""
        return fields

    def _metadata(p: dict[str, str]) -> str:
        lines = [
            "Metadata-Version: 2.1",
            f"Name: {p['name']}",
            f"Version: {p['version']}",
            f"Summary: {p['description']}",
            "License: Apache-2.0",
            f"Requires-Python: {p['requires-python']}",
            "Provides-Extra: autogen",
        ]
        for req in re.findall(r'"([^"]+)"', p["autogen"]):
            lines.append(f'Requires-Dist: {req}; extra == "autogen"')
        readme = os.path.join(ROOT, "README.md")
        body = open(readme, encoding="utf-8").read() if os.path.exists(readme) else ""
        return "\n".join(lines) + "\nDescription-Content-Type: text/markdown\n\n" + body

    def _dist_info(p: dict[str, str]) -> str:
        return f"{p['name']}-{p['version']}.dist-info"

    def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
        return []

    def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):  # type: ignore[no-untyped-def]
        p = _project()
        target = os.path.join(metadata_directory, _dist_info(p))
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "METADATA"), "w", encoding="utf-8") as f:
            f.write(_metadata(p))
        return _dist_info(p)

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
        p = _project()
        name = f"{p['name']}-{p['version']}-py3-none-any.whl"
        info = _dist_info(p)
        files: list[tuple[str, bytes]] = []
        package = os.path.join(ROOT, "onbehalf")
        for entry in sorted(os.listdir(package)):
            if entry.endswith(".py") or entry == "py.typed":
                with open(os.path.join(package, entry), "rb") as f:
                    files.append((f"onbehalf/{entry}", f.read()))
        files.append((f"{info}/METADATA", _metadata(p).encode("utf-8")))
        wheel = "Wheel-Version: 1.0\nGenerator: onbehalf-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        files.append((f"{info}/WHEEL", wheel.encode()))
        files.append((f"{info}/top_level.txt", b"onbehalf\n"))
        record = []
        for path, data in files:
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
        with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
            for path, data in files:
                z.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
        return name

    def get_requires_for_build_sdist(config_settings=None):  # type: ignore[no-untyped-def]
        return ["setuptools>=61"]

    def build_sdist(sdist_directory, config_settings=None):  # type: ignore[no-untyped-def]
        from setuptools.build_meta import build_sdist as _build_sdist

        return _build_sdist(sdist_directory, config_settings)
