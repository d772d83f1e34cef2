"""The ``hubedge`` command line: ``models``, ``export``, ``predict``, ``bench``, ``report`` and ``devices``.

Each command is a module here that declares its flags, calls the libraries (``hubedge.exporter``, ``hubedge.runtimes``,
``hubedge.benchmarks``) and prints. Every user error is one line on stderr and a non-zero exit; progress goes to
stderr, results to stdout (``--json`` makes stdout machine-readable).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users

from hubedge.exporter import __version__  # noqa: E402
from hubedge.cli import bench, devices, export, models, predict, report  # noqa: E402
from hubedge.cli.common import INTERRUPTED, native_output_to_stderr, say  # noqa: E402
from hubedge.runtimes.errors import HubedgeError  # noqa: E402
from hubedge.runtimes.preprocess import MAX_IMAGE_PIXELS_ENV  # noqa: E402

COMMANDS = (models, export, bench, report, devices, predict)  # in the order `hubedge --help` lists them

__all__ = ["build_parser", "main"]


def _on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: remember it, because converters may turn the KeyboardInterrupt into an error of their own."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubedge", description="Export TF Hub image models to verified edge "
                                     "artifacts (TFLite, ONNX, OpenVINO) and run them.")
    parser.add_argument("--version", action="version", version=f"hubedge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit status (2 for a user error, 130 for Ctrl-C)."""
    args = build_parser().parse_args(argv)
    INTERRUPTED.clear()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is \
            signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_interrupt)
    image_limit = os.environ.get(MAX_IMAGE_PIXELS_ENV)
    if getattr(args, "max_image_pixels", None) is not None:  # for this command and the children it starts
        os.environ[MAX_IMAGE_PIXELS_ENV] = str(args.max_image_pixels)
    try:
        with native_output_to_stderr():
            return args.run(args)
    except BrokenPipeError:  # `hubedge models | head`: the reader left, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:
        if INTERRUPTED.is_set():  # an interrupt that a library re-raised as its own error
            say("hubedge: interrupted; nothing half-written was left behind")
            return 130
        if isinstance(error, HubedgeError):
            say(f"hubedge: error: {error}")
            return error.exit_code
        raise
    except KeyboardInterrupt:
        say("hubedge: interrupted; nothing half-written was left behind")
        return 130
    finally:
        if image_limit is None:
            os.environ.pop(MAX_IMAGE_PIXELS_ENV, None)
        else:
            os.environ[MAX_IMAGE_PIXELS_ENV] = image_limit
        if signal.getsignal(signal.SIGINT) is _on_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)
