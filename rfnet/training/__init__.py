"""Pieces of the training and evaluation command lines (``rfnet.train``, ``rfnet.evaluate``).

``overrides``  ``--set key=value`` edits of the typed :class:`rfnet.config.ModelConfig` (torch-free).
``schedule``   the epoch-based step LR schedule with linear warm-up.
``state``      RNG state capture / restore in a ``torch.load(weights_only=True)``-safe form.
``datasets``   which items train and which validate (split, other root, k-fold, fraction).
``loop``       one training epoch.
``run``        the whole run: epochs, validation, metrics.csv / curves.png / checkpoints, resume.
"""
