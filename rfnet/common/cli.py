"""Small helpers shared by every command-line entry point (torch-free)."""
from __future__ import annotations

import logging


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger once per process, for ``main()`` functions only."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
