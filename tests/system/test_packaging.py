"""``pip install .`` from a fresh clone gives working programs: the wheel carries the
generated protobuf code (setup.py builds it from proto/), and its programs run from a
fresh virtual environment. Slow (a build and a dependency install): minutes."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_wheel_from_a_fresh_clone_runs_in_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True, timeout=120)
    assert not (src / "cortex" / "v1").exists(), "generated code must not be committed"
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(src)], check=True, timeout=600)
    wheel = next(dist.glob("cortex-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    subprocess.run([bin_dir / "pip", "install", "-q", str(wheel)], check=True, timeout=600,
                   cwd=tmp_path)
    for program in ("cortexd", "nodeagent", "cortexctl"):
        out = subprocess.run([bin_dir / program, "--version"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.startswith(f"{program} "), out
    # The generated modules import (the old failure: No module named 'cortex.v1').
    check = subprocess.run([bin_dir / "python", "-c", "import cortex.v1.control_pb2_grpc, "
                            "cortex.v1.node_pb2, cortexd.control.process, nodeagent.agent"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    state = tmp_path / "state"
    conf = subprocess.run([bin_dir / "cortexd", "--state-dir", str(state), "--insecure-loopback",
                           "--check-config"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert conf.returncode == 0, conf.stderr
