from pathlib import Path

import dae

from ..conftest import imports_outside

ROOT = Path(dae.__file__).parent


def test_dae_imports_only_torch_and_the_standard_library():
    assert len(list(ROOT.glob("*.py"))) >= 3
    assert imports_outside(ROOT) == []
