"""The held-out categories: never trained on, kept out of every index, evaluated by ``evaluate.py --other-categories``.

Why. The 13 categories the network knows are all seen in training, so their test split
measures generalisation to new *models* of known categories only. Whether the method
(network, shape bank, retrieval baselines) reconstructs *unseen categories* needs
categories that nothing built from the data set has seen: no training or validation
step of the network, no shape-bank shape or view (``training/build_shape_bank.py``), no
retrieval or mean-shape index entry (``training/evaluate.py``). Every model of a held-out
category, whatever its split in the manifest, is therefore evaluation material only.

Which. Half of the data set's extra pool (:data:`training.readers.rules.EXTRA_SYNSETS`,
24 product categories outside the 13): every other category in the order of the sorted
synset ids, starting with the first, chosen once when the pool had 24 categories and
fixed since (a category added to the pool later is *not* held out until listed here;
removing one from this list would put models into training whose scores were reported
as unseen). With the data set of ``training/build_dataset.py`` they hold 62 of the
pool's 100 models.
"""

from __future__ import annotations

__all__ = ["HELD_OUT_SYNSETS", "is_held_out"]

HELD_OUT_SYNSETS: tuple[str, ...] = (
    "02747177",  # ashcan
    "02818832",  # bed
    "02876657",  # bottle
    "02924116",  # bus
    "03046257",  # clock
    "03467517",  # guitar
    "03593526",  # jar
    "03710193",  # mailbox
    "03790512",  # motorcycle
    "03928116",  # piano
    "04225987",  # skateboard
    "04468005",  # train
)
"""ShapeNetCore synset ids of the held-out categories, sorted (the one list; see the module docstring)."""

_HELD_OUT = frozenset(HELD_OUT_SYNSETS)


def is_held_out(synset: str) -> bool:
    """Whether models of ``synset`` (a ShapeNetCore synset id, e.g. ``"02818832"``) are held out."""
    return str(synset) in _HELD_OUT


if __name__ == "__main__":
    import sys

    _SENTENCE = ("training/holdout.py is a module, not a command: the held-out categories are evaluated with "
                 "python training/evaluate.py --other-categories")
    if sys.argv[1:] in (["--help"], ["-h"]):  # asked what it is: the answer, exit 0
        print(_SENTENCE)
        sys.exit(0)
    print(f"error: {_SENTENCE}", file=sys.stderr)
    sys.exit(2)
