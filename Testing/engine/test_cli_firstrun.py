"""A new user's first run of `slidesam`: fast help, honest messages and progress, files as the umask says."""
import os
import re
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from SlideSAMLib import cli
from SlideSAMLib.cli import build_parser, main
from SlideSAMLib.stop_reasons import STOP_REASONS, describe_stops
from testdata import CT, CT_LABELS, ORGANS, ROOT, tight_box


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _python(code: str, **env):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=600)


def test_help_and_version_import_no_torch():
    """`slidesam --help` took 5.8 s because every sub-command's module pulled in torch (and FastAPI) at import."""
    probe = (
        "import contextlib, io, sys\n"
        "from SlideSAMLib.cli import main\n"
        "for argv in (['--help'], ['--version'], ['segment', '--help'], ['serve', '--help'], ['train', '--help'],\n"
        "             ['eval', '--help'], ['pseudo2d', '--help'], ['segment']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'fastapi', 'onnxruntime', 'matplotlib') if m in sys.modules))\n"
    )
    done = _python(probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_broken_subcommand_is_listed_with_its_reason(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_train_cli.py").write_text("import no_such_dependency_xyz  # a dependency missing or broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.EXTRA_COMMANDS, "train", "broken_train_cli")
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("train")]
    assert listed and "UNAVAILABLE" in listed[0]
    code, _, err = run_cli(capsys, "train", "--steps", "3", "-o", tmp_path / "out")
    assert code == 2
    assert err.startswith("slidesam: error: the 'train' command is unavailable") and "no_such_dependency_xyz" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("coords", ["voxel", "lps"])
def test_an_out_of_range_slice_says_so(tmp_path, capsys, coords):
    n = sitk.ReadImage(str(CT)).GetSize()[2]
    out = tmp_path / "x.nii.gz"
    k = n + 50 if coords == "voxel" else 1e5  # 100 m beyond any scan
    code, _, err = run_cli(capsys, "segment", CT, "--coords", coords, "--box", 10, 10, 20, 20, "--slice", k, "-o", out)
    assert code == 2
    assert "out of range" in err and f"along k are 0..{n - 1}" in err and "np." not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("given, axis", [("K", "k"), ("k", "k"), ("I", "i"), ("0", "i"), ("1", "j"), ("2", "k")])
def test_axis_takes_the_documented_forms(given, axis):
    args = build_parser().parse_args(["segment", "x.nii.gz", "--axis", given, "--slice", "3", "-o", "y.nii.gz"])
    assert args.axis == axis
    # refine takes the same forms (README "Command line": either case, or 0, 1, 2); it took only i, j, k before
    args = build_parser().parse_args(["refine", "x.nii.gz", "r.nii.gz", "--axis", given, "--slice", "3", "-o", "y.nii.gz"])
    assert args.axis == axis


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("name", ["label.nii.gz", "seg.seg.nrrd"])
def test_output_files_follow_the_umask(tmp_path, umask, mode, name):
    from SlideSAMLib import write_result

    reference = sitk.Image(8, 8, 4, sitk.sitkInt16)
    mask = np.zeros((4, 8, 8), bool)
    mask[1:3, 2:5, 2:5] = True
    old = os.umask(umask)
    try:
        path = write_result(mask, reference, tmp_path / name)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left beside it


def test_stop_reasons_are_said_in_words():
    line = describe_stops({"up": "vanished", "down": "volume-end"})
    assert line == (
        "up (higher slice indices): the structure ended: its mask vanished (vanished); "
        "down (lower slice indices): reached the edge of the volume (volume-end)"
    )
    assert "{" not in cli.result_line("out.nii.gz", {
        "slices": [80, 105], "axis": "k", "slices_written": 26, "stopped": {"up": "tail", "down": "grew"},
        "encoder_passes": 30, "seconds": 12.3, "prompt": "box"}, "embedded")


def test_every_stop_reason_is_described_here_and_in_the_readme():
    """Each reason the stop rule gives for a synthetic window that breaks one of its limits, plus the chain's own."""
    from dataclasses import replace

    from SlideSAMLib.propagation import SliceInfo, StopRule

    rule, good = StopRule(), SliceInfo(index=5, iou=0.9, stability=0.9, area=1000)
    broken = [
        replace(good, area=1), replace(good, tail_mm=rule.max_tail_mm + 1), replace(good, overlap=0.0),
        replace(good, growth=rule.max_growth + 1), replace(good, iou=0.0), replace(good, intensity_inliers=0.0),
        replace(good, drift_iqr=rule.max_drift_iqr + 1),
    ]
    assert rule.reason(good, 1000) is None
    reasons = {rule.reason(info, 1000) for info in broken} | {"volume-end", "range-end", "cancelled"}
    reasons |= {"agrees", "departs", "kept"}  # a refinement's own (Session.refine with `current`)
    assert reasons == set(STOP_REASONS)
    readme = (ROOT / "README.md").read_text()
    for reason in STOP_REASONS:
        assert f"| `{reason}` |" in readme, reason


def test_timm_moves_are_silenced_and_nothing_else():
    from SlideSAMLib.timm_warnings import quiet_timm_moves

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_timm_moves():
            warnings.warn("Importing from timm.models.layers is deprecated, please import via timm.layers", FutureWarning)
            warnings.warn("Importing from timm.models.registry is deprecated, please import via timm.models", FutureWarning)
            warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_progress_counts_slices_without_a_made_up_total(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = cli._ProgressBar(enabled=True)
    for fraction, message in [(0.0, "slice 93 (prompt)"), (0.01, "slice 94 (up)"), (0.02, "slice 95 (up)"), (0.5, "slice 92 (down)")]:
        bar(fraction, message)
    assert bar.slices == 3 and bar.bar.total is None and bar.bar.n == 3
    bar.close()


def test_eval_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run_cli(capsys, "eval", "--case", CT, CT_LABELS, "-o", tmp_path / "eval")
    assert code == 2 and "pip install 'slidesam[eval]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()


def _run_on_a_terminal(argv, **env):
    """`python -m SlideSAMLib.cli ARGV` with stderr on a pseudo-terminal, as a user sees it: (code, stdout, stderr)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns (a new pty has 0)
    proc = subprocess.Popen([sys.executable, "-m", "SlideSAMLib.cli", *map(str, argv)], stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = proc.stdout.read().decode()
    return proc.wait(timeout=600), stdout, b"".join(chunks).decode(errors="replace")


def test_first_run_on_a_terminal(tmp_path, ct_labels):
    """A fresh cache (the first run): one line while the encoder is exported, a count of slices done (no total),
    the last line in words, no timm warnings."""
    (i0, j0, k), (i1, j1, _) = tight_box(ct_labels == ORGANS["kidney_left"])
    out = tmp_path / "kidney.nii.gz"
    code, stdout, terminal = _run_on_a_terminal(
        ["segment", CT, "--box", i0, j0, i1, j1, "--slice", k, "--range", k - 1, k + 1, "-o", out],
        SLIDESAM_CACHE_DIR=str(tmp_path / "cache"),
    )
    assert code == 0, terminal
    assert terminal.count("exporting the image encoder for ONNX Runtime once") == 1, terminal
    assert "propagating: 2 slices done [" in terminal and not re.search(r"\d%\|", terminal), terminal  # no percentage bar
    assert "Warning" not in terminal, terminal
    last = stdout.strip().splitlines()[-1]
    assert "{" not in last
    assert "stopped up (higher slice indices): reached the end of the slice range (range-end); " \
           "down (lower slice indices): reached the end of the slice range (range-end)" in last
