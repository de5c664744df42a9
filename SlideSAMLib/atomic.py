"""Writing a file atomically: the whole file appears under its name, or nothing does.

Every file SlideSAM writes (results, reports, figures, adapters, the ONNX encoder, training state, embedding
stores) goes through `atomic_write`: the writer fills a new file beside the target, which is renamed into place
only when the writer returns. On an exception the temporary file is removed and the target is left as it was.
The file gets mode 0666 less the umask, as any file the user writes (tempfile.mkstemp would make it 0600, and
the rename would keep that).
"""
import os
import secrets
from pathlib import Path
from typing import Callable, Union

from .errors import InputError

_DOUBLE_SUFFIXES = (".nii.gz", ".seg.nrrd")


def _suffix(path: Path) -> str:
    """The target's suffix, kept on the temporary file: SimpleITK, numpy and matplotlib choose the format by it."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(_DOUBLE_SUFFIXES) else path.suffix


def _new_file(path: Path) -> Path:
    for _ in range(100):
        tmp = path.parent / f".slidesam-{secrets.token_hex(6)}{_suffix(path)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise InputError(f"cannot create a temporary file in {path.parent}: too many .slidesam-* files there; remove them")


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it to `path`.

    The folder must exist. The temporary file is removed whatever happens; on an exception `path` is untouched.
    """
    path = Path(path)
    tmp = _new_file(path)
    try:
        mode = os.stat(tmp).st_mode & 0o777  # 0666 less the umask, applied by the kernel at creation
        write(tmp)
        os.chmod(tmp, mode)  # a writer that deletes and recreates the file would otherwise choose its own mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
