"""Fuzzed molecule files (hypothesis): every command that reads user files either succeeds or
prints one clear line per bad molecule, naming the file, and never a traceback; a good molecule
after a bad one is still processed wherever the bad record leaves the file's structure intact."""
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmlrp.cli import main

from .conftest import train_tiny

DATA = Path(__file__).parent / "data"
METHANE = "5\nmethane\nC 0.0 0.0 0.0\nH 0.629 0.629 0.629\nH -0.629 -0.629 0.629\nH -0.629 0.629 -0.629\nH 0.629 -0.629 -0.629\n"

elements = st.sampled_from(["C", "H", "O", "N", "F", "Cl", "X", "c", "1", "Q", "*", "He", "Xx", ""])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
                    st.floats(-5, 5).map(lambda v: f"{v:.4f}"), st.sampled_from(["abc", "1,5", "--1", "1e999", ""]))
# a NUL byte makes the whole file binary (molgraph.io refuses it as a whole), so good records hold none
comments = st.one_of(st.text(st.characters(exclude_characters="\x00"), max_size=20), st.sampled_from(["charge=1", "charge=x", "multiplicity=3", "mult=0",
                                                            "\ufeffbom", "caf\xe9", "Properties=species:S:1"]))


@st.composite
def xyz_record(draw):
    n = draw(st.integers(1, 6))
    lines = []
    for _ in range(n):
        cols = [draw(elements)] + [draw(numbers) for _ in range(draw(st.sampled_from([3, 3, 3, 2, 4])))]
        lines.append(" ".join(cols))
    count = draw(st.sampled_from([str(n), str(n), str(n + 1), str(max(n - 1, 0)), "x", "-1", ""]))
    return count == str(n), f"{count}\n{draw(comments)}\n" + "\n".join(lines) + "\n"


def _check(capsys, rc, path: Path, expect_good: bool):
    out = capsys.readouterr()
    assert rc in (0, 1), out.err
    assert "Traceback" not in out.err and "Traceback" not in out.out
    failed = [line for line in out.err.splitlines() if line.startswith("FAILED")]
    assert all(path.name in line for line in failed), failed
    assert all("\n" not in f and len(f) < 2000 for f in failed)
    if expect_good:
        assert "CH4" in out.out or "C2H6O" in out.out, out
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(xyz_record(), min_size=1, max_size=3), st.booleans(), st.booleans())
def test_fuzzed_xyz_files_give_clear_lines_and_the_good_molecule(tmp_path_factory, capsys, records, bom, latin1):
    path = tmp_path_factory.mktemp("fz") / "fuzz.xyz"
    text = "".join(r for _, r in records) + METHANE
    data = text.encode("latin-1", errors="replace") if latin1 else text.encode("utf-8", errors="surrogatepass")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    intact = all(ok for ok, _ in records)
    _check(capsys, main(["inspect", str(path)]), path, expect_good=intact)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 24), st.sampled_from(["delete", "garbage", "element", "duplicate", "truncate"]),
       st.text(max_size=30))
def test_fuzzed_sdf_records_give_clear_lines_and_the_next_record(tmp_path_factory, capsys, line_no, how, junk):
    good = (DATA / "ethanol.sdf").read_text()
    lines = good.rstrip("\n").split("\n")
    k = min(line_no, len(lines) - 1)
    if how == "delete":
        del lines[k]
    elif how == "garbage":
        lines[k] = junk
    elif how == "element":
        lines[k] = lines[k].replace(" C ", " Q ").replace(" H ", " * ").replace(" O ", " Cl")
    elif how == "duplicate":
        lines.insert(k, lines[k])
    else:
        lines = lines[:k]
    bad = "\n".join(lines)
    if not bad.rstrip().endswith("$$$$"):
        bad += "\n$$$$"
    path = tmp_path_factory.mktemp("fz") / "fuzz.sdf"
    path.write_text(bad + "\n" + good)
    touched_delimiter = "$$$$" in junk
    _check(capsys, main(["inspect", str(path)]), path, expect_good=not touched_delimiter)


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA / "malformed").iterdir()))
def test_the_corpus_of_real_cases_gives_clear_lines(name, capsys):
    path = DATA / "malformed" / name
    _check(capsys, main(["inspect", str(path)]), path, expect_good=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    import gcnn
    from molgraph import qm9

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fzmodel")
    ds = qm9.load(ids=range(1, 61), cache_root=root / "cache", workers=1, progress=False, log=lambda m: None)
    ids = [int(i) for i in ds.ids]
    out = train_tiny(root / "model", ds.subset(ids[:50]), ds.subset(ids[50:]))
    gcnn.domain.record(out, ds.subset(ids[:50]))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(xyz_record(), min_size=1, max_size=2))
def test_predict_on_fuzzed_files_never_raises(tiny_model, tmp_path_factory, capsys, records):
    path = tmp_path_factory.mktemp("fz") / "fuzz.xyz"
    path.write_text("".join(r for _, r in records) + METHANE)
    out = _check(capsys, main(["predict", "--model", str(tiny_model), str(path)]), path,
                 expect_good=all(ok for ok, _ in records))
    assert all("domain" in line for line in out.out.splitlines() if "alpha_bohr3" in line)
