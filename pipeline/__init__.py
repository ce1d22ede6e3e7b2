"""What the commands share: video decoding, the CLIP side, datasets, MoTE, run folders."""

from importlib.metadata import PackageNotFoundError, version

from mote.pipeline import _torchvision_shim

_torchvision_shim.install_hook()

try:
    __version__ = version("mote")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
