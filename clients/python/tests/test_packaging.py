"""The package installs offline: ``pip install --no-build-isolation`` with no index, whatever setuptools."""

from __future__ import annotations

import subprocess
import unittest

from support import PACKAGE_ROOT, PYTHON, TempDir, python_env


class PackagingTests(unittest.TestCase):
    def test_installs_offline_without_build_isolation(self) -> None:
        if subprocess.run([PYTHON, "-m", "pip", "--version"], capture_output=True).returncode != 0:
            self.skipTest("pip is not available")
        tmp = TempDir()
        try:
            target = tmp.join("site")
            r = subprocess.run(
                [PYTHON, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-deps", "--quiet",
                 "--disable-pip-version-check", "--target", target, PACKAGE_ROOT],
                capture_output=True, text=True, timeout=120,
            )
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            env = dict(python_env(), PYTHONPATH=target)
            check = subprocess.run(
                [PYTHON, "-c", "import onbehalf, onbehalf.spool; print(onbehalf.__version__, onbehalf.__file__)"],
                capture_output=True, text=True, env=env, cwd=tmp.path, timeout=30,
            )
            self.assertEqual(check.returncode, 0, check.stderr)
            self.assertIn(target, check.stdout)
        finally:
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
