"""The wheel is the package: built from this checkout and installed (--no-deps, on top of the
project's dependencies) into a fresh virtual environment, it composes its shipped configs and
trains from a folder outside the repository, through `python -m` and the console scripts."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["experiment=tiny", "trainer=cpu", "logger=none", "trainer.enable_progress_bar=false",
        "trainer.fast_dev_run=true"]


def run(*cmd, cwd, timeout=900):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-4000:])
    return out


@pytest.mark.slow
def test_an_installed_wheel_trains_outside_the_repository(tmp_path, shared_data):
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
        ROOT, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("cllm4rec-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip())
    # the project's dependencies, not cllm4rec itself: a .pth line adds the path, its .pth files stay unread
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(python, "-c", "import cllm4rec, cllm4rec.paths as p; print(cllm4rec.__file__); "
                "print(sorted(x.name for x in p.CONFIG_DIR.iterdir()))", cwd=work).stdout.splitlines()
    assert where[0].startswith(str(site)), where      # the wheel's copy, not this checkout
    assert "'pretrain.yaml'" in where[1] and "'experiment'" in where[1]
    run(python, "-m", "cllm4rec.pretrain", *TINY, "model.pretrain.evaluate=false", cwd=work)
    run(venv / "bin" / "cllm4rec-finetune", *TINY, cwd=work)
    folder = work / "runs" / "ml100k" / "tiny_gpt2" / "tiny"
    assert (folder / "pretrain" / "embeddings.safetensors").exists()
    assert (folder / "finetune" / "metrics.json").exists()
