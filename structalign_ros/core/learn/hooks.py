"""The events of the training loop (:meth:`core.learn.train.Trainer.fit`) a caller can act on.

Kept apart from :mod:`core.learn.train` so that a command can define its hooks without importing torch
(``structalign train --help`` stays instant).
"""

from __future__ import annotations

from typing import Any

# ``trainer`` below is the :class:`core.learn.train.Trainer` running the loop (typed ``Any``: this module
# must not import core.learn.train, which imports it)


class TrainHooks:
    """What :meth:`Trainer.fit` calls around its steps; every method does nothing unless overridden.

    A caller subclasses the ones it needs (``structalign train``: the metrics log, the progress bar,
    the best weights on validation, the pose-head refit; the experiments: none).
    """

    def on_step(self, trainer: Any, metrics: dict[str, float]) -> None:
        """After every step (``trainer.step`` already counts it), with the step's metrics."""

    def on_validate(self, trainer: Any, metrics: dict[str, float]) -> None:
        """After every validation, with its metrics (:func:`evaluate`)."""

    def on_epoch_end(self, trainer: Any) -> None:
        """At the end of every pass (``trainer.epoch`` already counts it), after its validation."""

    def on_end(self, trainer: Any) -> None:
        """Once the loop is done and its last checkpoint written (not after an exception)."""
