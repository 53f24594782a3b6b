"""notebooks/quickstart.ipynb runs top to bottom (its code cells, in order, in one namespace)."""
import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)               # its run folder lands in tmp_path/runs
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    namespace: dict = {}
    for n, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"{NOTEBOOK.name}[code cell {n}]", "exec"), namespace)
    assert namespace["results"]["retrieval"]["CLLM4Rec"]["n_users_evaluated"] == 943
    assert (tmp_path / "runs" / "quickstart" / "plot.png").exists()
    assert len(namespace["rec"].recommend(user="196", k=5)) == 5
