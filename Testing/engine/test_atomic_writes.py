"""Every file SlideSAM writes appears whole or not at all, with the mode the umask gives, and leaves no temp file.

One test per kind of writer that calls SlideSAMLib.atomic: results (SimpleITK), eval reports (text), eval
figures (matplotlib), adapters (safetensors + JSON), the ONNX encoder export, and the trainer's state (torch.save).
Each writer is made to fail after it has written part of its file: the target must stay absent (or unchanged)
and the folder must hold no temporary file.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SlideSAMLib import atomic
from SlideSAMLib.errors import InputError
from SlideSAMLib.evaluation import report
from SlideSAMLib.imageio import write_result


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield 0o666 & ~request.param
    os.umask(old)


def _partial_then_fail(*args, **kwargs):
    """Stands in for a writer (WriteImage, torch.save, save_file, onnx.export): writes part of its file, then fails."""
    path = next(a for a in args if isinstance(a, (str, os.PathLike)))
    Path(path).write_bytes(b"half a file")
    raise RuntimeError("disk full (simulated)")


def _names(folder: Path):
    return sorted(p.name for p in Path(folder).iterdir())


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_helper_mode_and_failure(tmp_path, umask):
    target = atomic.atomic_write_text(tmp_path / "a.json", "{}")
    assert _mode(target) == umask and target.read_text() == "{}"
    with pytest.raises(RuntimeError):
        atomic.atomic_write(tmp_path / "b.nii.gz", _partial_then_fail)
    assert _names(tmp_path) == ["a.json"]
    # a failed rewrite leaves the old file as it was
    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, _partial_then_fail)
    assert target.read_text() == "{}" and _names(tmp_path) == ["a.json"]


def test_temp_file_keeps_double_suffix(tmp_path):
    seen = []
    atomic.atomic_write(tmp_path / "r.seg.nrrd", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].startswith(".slidesam-") and seen[0].endswith(".seg.nrrd")


def _reference():
    image = sitk.Image(8, 7, 6, sitk.sitkInt16)
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


def test_result_writer(tmp_path, umask, monkeypatch):
    mask = np.zeros((6, 7, 8), np.uint8)
    mask[2:4, 2:5, 3:6] = 1
    for name in ("r.nii.gz", "r.seg.nrrd"):
        assert _mode(write_result(mask, _reference(), tmp_path / name)) == umask
    monkeypatch.setattr(sitk, "WriteImage", _partial_then_fail)
    with pytest.raises(InputError, match="disk full"):
        write_result(mask, _reference(), tmp_path / "x.nii.gz")
    assert _names(tmp_path) == ["r.nii.gz", "r.seg.nrrd"]


def _report(structure="liver"):
    run = {"dice": 0.9, "surface_dice_2mm": 0.8, "hd95_mm": 3.0}
    return {"model": "m", "supports_points": False, "results": [{"case": "c", "structure": structure, "runs": {"box": run}}], "summary": {}}


def test_report_text(tmp_path, umask):
    assert _mode(report.write_json(_report(), tmp_path / "eval.json")) == umask
    assert _mode(report.write_markdown(_report(), tmp_path / "eval.md")) == umask
    # a name that cannot be encoded fails in the middle of writing the table
    with pytest.raises(UnicodeEncodeError):
        report.write_markdown(_report("bad \udc80 name"), tmp_path / "bad.md")
    assert _names(tmp_path) == ["eval.json", "eval.md"]
    assert json.loads((tmp_path / "eval.json").read_text())["model"] == "m"


def test_report_figure(tmp_path, umask, monkeypatch):
    pytest.importorskip("matplotlib")
    truth = np.zeros((5, 16, 16), np.uint8)
    truth[1:4, 4:10, 4:10] = 1
    case = SimpleNamespace(volume=np.random.default_rng(0).normal(size=truth.shape))
    fig_data = {"truth": truth, "box_pred": truth, "k0": 2, "box": (4, 4, 10, 10)}
    result = {"slice_dice": {1: 1.0, 2: 1.0, 3: 1.0}, "runs": {"box": {"dice": 1.0, "surface_dice_2mm": 1.0}}, "case": "c", "structure": "s"}
    assert _mode(report.figure(case, result, fig_data, tmp_path / "f.png")) == umask
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: _partial_then_fail(path))
    with pytest.raises(RuntimeError):
        report.figure(case, result, fig_data, tmp_path / "g.png")
    assert _names(tmp_path) == ["f.png"]


def _peft_model():
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0"])), base


def test_adapter(tmp_path, umask, monkeypatch):
    from SlideSAMLib.adapter import ADAPTER_MANIFEST, save_adapter

    peft_model, base = _peft_model()
    folder = save_adapter(peft_model, base, ["1.weight"], tmp_path / "ok", {"base": "embedded"})
    assert {p.name: _mode(p) for p in folder.iterdir()} == {n: umask for n in _names(folder)}
    assert ADAPTER_MANIFEST in _names(folder) and len(_names(folder)) == 4
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _partial_then_fail)
    with pytest.raises(RuntimeError):
        save_adapter(peft_model, base, ["1.weight"], tmp_path / "bad", {"base": "embedded"})
    assert _names(tmp_path / "bad") == []


def test_onnx_export(tmp_path, umask, monkeypatch):
    pytest.importorskip("onnx")
    from SlideSAMLib.onnx_encoder import OnnxEncoder

    monkeypatch.setenv("SLIDESAM_CACHE_DIR", str(tmp_path))
    encoder = torch.nn.Conv2d(3, 2, 4, stride=4)
    path = OnnxEncoder._export(encoder, 16)
    assert _mode(path) == umask and _names(path.parent) == [path.name]
    monkeypatch.setattr(torch.onnx, "export", _partial_then_fail)
    with pytest.raises(RuntimeError):
        OnnxEncoder._export(torch.nn.Conv2d(3, 2, 2, stride=2), 16)
    assert _names(path.parent) == [path.name]


@dataclass
class _Config:
    steps: int = 1


def test_trainer_state(tmp_path, umask, monkeypatch):
    from SlideSAMLib.training.trainer import STATE_FILE, Trainer

    net = torch.nn.Linear(2, 2)
    fake = SimpleNamespace(rank=0, net=net, step=3, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), cfg=_Config(), out=tmp_path)
    Trainer.save_state(fake)
    assert _mode(tmp_path / STATE_FILE) == umask
    before = (tmp_path / STATE_FILE).read_bytes()
    monkeypatch.setattr(torch, "save", _partial_then_fail)
    fake.step = 4
    with pytest.raises(RuntimeError):
        Trainer.save_state(fake)
    assert _names(tmp_path) == [STATE_FILE] and (tmp_path / STATE_FILE).read_bytes() == before


def test_too_many_temp_files_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "same")
    (tmp_path / ".slidesam-same.json").write_text("")
    with pytest.raises(InputError, match="too many .slidesam-"):
        atomic.atomic_write_text(tmp_path / "a.json", "{}")


def test_embedding_store(tmp_path, umask, monkeypatch):
    """The neighbour-head trainer's on-disk embeddings (training/embeddings.py), with a stand-in predictor."""
    from SlideSAMLib.training.embeddings import EmbeddingStore

    store = EmbeddingStore.__new__(EmbeddingStore)  # no model: the writer is what is tested
    store.root, store.computed, store.seconds = tmp_path, 0, 0.0
    cache = {}
    predictor = SimpleNamespace(digest="vol", cache_key="c", cache=SimpleNamespace(get=cache.get, clear=cache.clear),
                                encode=lambda ks: cache.update({("c", k): torch.ones(2, 2) for k in ks}))
    monkeypatch.setattr(store, "predictor", lambda volume: predictor)
    assert store.ensure(None, [3]) == 1
    written = tmp_path / "vol" / "k0003.npy"
    assert _mode(written) == umask and np.load(written).dtype == np.float16
    monkeypatch.setattr(np, "save", _partial_then_fail)
    with pytest.raises(RuntimeError):
        store.ensure(None, [4])
    assert _names(tmp_path / "vol") == ["k0003.npy"]
