import ast
import sys
from pathlib import Path

import dae

ROOT = Path(dae.__file__).parent


def test_dae_imports_only_torch_and_the_standard_library():
    allowed = {"torch", "__future__"} | set(sys.stdlib_module_names)
    files = list(ROOT.glob("*.py"))
    assert len(files) >= 3
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
