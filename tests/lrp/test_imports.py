from pathlib import Path

import lrp

from ..conftest import imports_outside


def test_lrp_imports_only_torch_and_the_standard_library():
    assert imports_outside(Path(lrp.__file__).parent) == []
