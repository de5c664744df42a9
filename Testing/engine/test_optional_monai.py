"""monai is the `eval` extra: the engine, the CLI's segment path and the server never import it, and
`slidesam eval` without it stops before any work with one line naming the extra."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from SlideSAMLib.cli import main
from SlideSAMLib.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_monai(monkeypatch):
    for name in [m for m in sys.modules if m == "monai" or m.startswith("monai.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "monai", None)  # `import monai` now raises ImportError, as when not installed


def test_declared_in_the_eval_and_test_extras_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = lambda reqs: [r for r in reqs if r.split(">")[0].split("=")[0].strip() == "monai"]
    assert not named(project["dependencies"])
    assert named(project["optional-dependencies"]["eval"]) and named(project["optional-dependencies"]["test"])
    assert "monai==" in (ROOT / ".ci" / "constraints.txt").read_text()


def test_engine_and_server_import_without_monai():
    code = ("import sys; sys.modules['monai'] = None\n"
            "import SlideSAMLib.session, SlideSAMLib.propagation, SlideSAMLib.cli, SlideSAMLib.server.app, SlideSAMLib.refine_cli\n"
            "from SlideSAMLib.evaluation.metrics import dice\n"
            "assert dice([1, 0], [1, 0]) == 1.0\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_metrics_without_monai_say_which_extra(no_monai):
    import numpy as np

    from SlideSAMLib.evaluation import metrics

    a = np.zeros((3, 8, 8), bool)
    a[1, 2:5, 2:5] = True
    for f in (lambda: metrics.surface_dice(a, a, (1, 1, 1)), lambda: metrics.hd95(a, a, (1, 1, 1))):
        with pytest.raises(InputError, match=r"pip install 'slidesam\[eval\]'"):
            f()


def test_eval_without_monai_stops_first_with_one_line(no_monai, data_dir, tmp_path, capsys):
    d = data_dir / "ct_liver_3slice"
    out = tmp_path / "e"
    code = main(["eval", "--case", str(d / "dicom"), str(d / "liver_spine_seg.nrrd"), str(d / "labels.json"),
                 "--structures", "liver", "--no-figures", "--device", "cpu", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'slidesam[eval]'" in err and "monai" in err, err
    assert not out.exists()
