"""The one place Ultralytics is imported, offline by construction.

Importing this module (before Ultralytics) sets:

- ``YOLO_OFFLINE=1``: Ultralytics' ``ONLINE`` flag is False, so its version check, analytics,
  error reporting and requirement auto-installs stay off, and a failed download is not retried;
- ``YOLO_CONFIG_DIR``: Ultralytics' settings folder, ``<project>/runs/.ultralytics`` unless the
  user set one, so nothing is written to the user's home.

``ultralytics()`` then imports the package and, once per process:

- puts a local font (matplotlib's DejaVu Sans) in the settings folder as ``Arial.ttf`` and
  ``Arial.Unicode.ttf``: ``check_font`` looks there first, so plotting and dataset checks never
  try to fetch the font from the internet;
- replaces Ultralytics' download functions by ones that fail at once with ``ConnectionError``.
  A weights name such as ``yolo26n.pt`` used by the AMP check on CUDA then falls back to
  Ultralytics' offline path (a warning, AMP kept on) instead of a request and retries;
- when stdout is not a terminal (SLURM, nohup, CI), makes Ultralytics' progress bars
  non-interactive (``_plain_progress``): each bar then prints one line when it ends (one per
  epoch in training) instead of carriage-return redraws.

Everything else (``utils.pipelines.detection``, ``utils.pipelines.yolo``) gets the ``YOLO`` class from here.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from utils.progress import interactive

log = logging.getLogger("hipkp")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "runs" / ".ultralytics"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")

os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_CONFIG_DIR", str(DEFAULT_CONFIG_DIR))

_READY = False


class DownloadDisabled(ConnectionError):
    """Raised instead of any Ultralytics download (the toolkit runs offline)."""


def _no_download(url=None, *args, **kwargs):
    raise DownloadDisabled(f"download of {url} refused: this toolkit runs offline (YOLO_OFFLINE=1); "
                           "give local files instead")


def _install_local_fonts(config_dir: Path) -> None:
    """Copy matplotlib's DejaVu Sans to the names ``check_font`` looks up in the settings folder."""
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONT_NAMES:
        dst = Path(config_dir) / name
        if not dst.exists() and src.is_file():
            try:
                shutil.copyfile(src, dst)
            except OSError as e:  # read-only settings folder: the download guard still holds
                log.debug("could not place %s in %s: %s", name, config_dir, e)


def _guard_downloads() -> None:
    """Make every Ultralytics download path fail fast instead of touching the network."""
    import ultralytics.data.utils as data_utils
    import ultralytics.utils as ul_utils
    import ultralytics.utils.checks as ul_checks
    import ultralytics.utils.downloads as dl

    original_is_url = dl.is_url

    def is_url(url, check: bool = False) -> bool:
        return False if check else original_is_url(url)  # offline, no URL is reachable: never probe

    dl.safe_download = _no_download
    dl.download = _no_download
    dl.get_github_assets = lambda *a, **k: ("", [])
    dl.is_url = is_url
    data_utils.safe_download = _no_download
    data_utils.download = _no_download
    # ultralytics imported before this module (and before YOLO_OFFLINE) may have ONLINE=True
    for mod in (ul_utils, ul_checks, sys.modules.get("ultralytics.utils.events")):
        if mod is not None and getattr(mod, "ONLINE", False):
            mod.ONLINE = False


def _plain_progress() -> None:
    """Ultralytics' own TQDM redraws with "\\r" unless its ``is_noninteractive_console()`` (only
    true under GitHub Actions) says otherwise; say so whenever stdout is not a terminal."""
    if interactive(sys.stdout):
        return
    try:
        from ultralytics.utils import tqdm as ul_tqdm
    except ImportError:  # an Ultralytics without its own TQDM (older releases use tqdm's)
        return
    if hasattr(ul_tqdm, "is_noninteractive_console"):
        ul_tqdm.is_noninteractive_console = lambda: True


def ultralytics():
    """Import Ultralytics offline (see the module docstring) and return the package."""
    global _READY
    import ultralytics as ul

    if not _READY:
        from ultralytics.utils import USER_CONFIG_DIR

        _install_local_fonts(USER_CONFIG_DIR)
        _guard_downloads()
        _plain_progress()
        _READY = True
    return ul


def yolo_class():
    """Ultralytics' ``YOLO`` class, imported offline."""
    return ultralytics().YOLO
