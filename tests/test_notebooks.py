"""The tutorials in notebooks/: each is committed executed (outputs present, no error outputs)
and runs top to bottom on small data (QMLRP_NOTEBOOK_SAMPLE / _EPOCHS) without an error."""
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_each_is_committed_executed():
    import nbformat

    assert len(NOTEBOOKS) >= 2
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.get("execution_count") for c in code), f"{p.name}: not executed"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{p.name}: an error output"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_notebook_runs_top_to_bottom(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("QMLRP_NOTEBOOK_SAMPLE", "300")
    monkeypatch.setenv("QMLRP_NOTEBOOK_EPOCHS", "2")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   ).execute()  # the kernel inherits os.environ; raises CellExecutionError on the first failing cell
