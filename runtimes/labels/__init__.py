"""The label lists shipped with hubedge (ImageNet-21k and ILSVRC-2012 WordNet IDs and lemmas).

The text files beside this module come from ``shared/labels`` (see ``README.md`` here for their source); one
class a line, in the order of the models' outputs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

from hubedge.runtimes.errors import HubedgeError

__all__ = ["LABEL_SETS", "LabelList", "load_labels"]

_DIR = Path(__file__).resolve().parent
LABEL_SETS: dict[str, int] = {"imagenet21k": 21843, "ilsvrc2012": 1000}


class LabelList(NamedTuple):
    """One label list: ``wordnet_ids[i]`` and ``lemmas[i]`` describe output ``i``."""

    name: str
    wordnet_ids: tuple[str, ...]
    lemmas: tuple[str, ...]

    def short(self, index: int) -> str:
        """The first lemma of class ``index`` ("tabby" for "tabby, tabby cat")."""
        return self.lemmas[index].split(",")[0].strip()


def _read_lines(path: Path) -> tuple[str, ...]:
    return tuple(line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines())


@functools.cache
def load_labels(name: str) -> LabelList:
    """Loads a bundled label list by name, checking its length against the model family it serves."""
    if name not in LABEL_SETS:
        raise HubedgeError(f"unknown label list {name!r}; bundled lists: {', '.join(sorted(LABEL_SETS))}")
    ids = _read_lines(_DIR / f"{name}_wordnet_ids.txt")
    lemmas = _read_lines(_DIR / f"{name}_wordnet_lemmas.txt")
    if not len(ids) == len(lemmas) == LABEL_SETS[name]:
        raise HubedgeError(f"label list {name!r} is damaged ({len(ids)} ids, {len(lemmas)} lemmas); reinstall hubedge")
    return LabelList(name, ids, lemmas)
