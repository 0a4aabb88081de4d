"""The docs notebook (issue 25 item 3) runs from top to bottom in the venv's python3 kernel:
three small runs on sim:vortex with the progress display, ``spinlab.runs.search``, a run's HTML
repr and a comparison plot; no cell errs and nothing is written to stderr (rich's live display
needs ipywidgets in Jupyter: the notebook's own bars are used instead)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "runs.ipynb"


def test_the_runs_notebook_executes_and_shows_tables_progress_and_a_comparison_plot(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINLAB_CATALOG", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<progress" in h and "sweep" in h for h in html)  # the progress bars, drawn as HTML
    assert any("config.field_T" in h and "threshold_A" in h for h in html)  # the search's table
    assert any("<caption" in h and "threshold_A" in h for h in html)  # the Run's own HTML
    assert any("image/png" in o.get("data", {}) for o in notebook.cells[-2].outputs)  # the plot
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed.count("completed") == 3
    assert len(list((tmp_path / "runs").glob("*-characterize-*"))) == 3
