"""Packaging: ``python -m build`` makes a wheel and an sdist that ``twine
check`` accepts; the wheel installs into a fresh virtual environment, whose
``modelmon --version`` and ``modelmon serve`` work from the installed files
(not this checkout); the README's Layout section names every module and
top-level folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests

from modelmon import __version__
from modelmon.cli import main
from servers import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "exporter" / "modelmon"


def _clean_env() -> dict[str, str]:
    """The environment without this checkout on PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_version_is_single_sourced(capsys: pytest.CaptureFixture[str]) -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "modelmon.__version__"}
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"modelmon {__version__}"


def test_readme_layout_names_every_module_and_folder() -> None:
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    words = set(re.findall(r"[\w.-]+", layout))
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    missing = sorted(m for m in modules | packages if m not in words)
    assert not missing, f"README.md Layout does not mention modelmon modules {missing}"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    top = {line.split("/", 1)[0] for line in tracked.splitlines() if "/" in line}
    top_missing = sorted(d for d in top if f"{d}/" not in layout and d not in words)
    assert not top_missing, f"README.md Layout does not mention top-level folders {top_missing}"


@pytest.mark.e2e
def test_wheel_builds_installs_and_serves(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=300, env=_clean_env())
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"modelmon-{__version__}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"modelmon-{__version__}.tar.gz"]
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout
    # The Apache-2.0 text the metadata declares travels with both.
    with zipfile.ZipFile(wheels[0]) as whl:
        assert f"modelmon-{__version__}.dist-info/licenses/LICENSE" in whl.namelist()
    with tarfile.open(sdists[0]) as sdist:
        assert f"modelmon-{__version__}/LICENSE" in sdist.getnames()
    assert "Apache License" in (REPO / "LICENSE").read_text()

    # A fresh venv; numpy, scipy and friends come from the system site-packages (no download),
    # modelmon itself only from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py, exe = venv / "bin" / "python", venv / "bin" / "modelmon"
    install = subprocess.run([str(py), "-m", "pip", "install", "--no-index", "--no-deps", "--force-reinstall",
                              "--disable-pip-version-check", "-q", str(wheels[0])],
                             capture_output=True, text=True, timeout=300, env=_clean_env())
    assert install.returncode == 0, install.stdout + install.stderr
    deps = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, timeout=120,
                          env=_clean_env())
    assert "modelmon" not in deps.stdout, f"the wheel's dependencies are not met:\n{deps.stdout}"
    where = subprocess.run([str(py), "-c", "import modelmon; print(modelmon.__file__)"], capture_output=True,
                           text=True, timeout=60, cwd=tmp_path, env=_clean_env())
    assert where.returncode == 0 and where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr

    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=_clean_env())
    assert version.returncode == 0 and version.stdout.strip() == f"modelmon {__version__}", version.stderr

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        serve = subprocess.Popen([str(exe), "serve", f"--web.listen-address=127.0.0.1:{port}", "--rate=50"],
                                 stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, env=_clean_env())
    try:
        def ready() -> bool:
            assert serve.poll() is None, log.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(ready, 60, what="modelmon serve from the wheel to be ready")
        # The simulated model's requests are counted (the installed package is whole: simulator, pipeline...).
        metrics = wait_until(lambda: (lambda text: text if 'modelmon_requests_total{model="demo"' in text else None)(
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text), 30, what="simulated requests")
        assert re.search(rf'modelmon_build_info{{[^}}]*version="{re.escape(__version__)}"', metrics), metrics[:500]
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=20)
    assert code == 0, log.read_text()
