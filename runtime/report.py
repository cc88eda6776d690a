"""Rebuild the screening report of an output folder: ``python -m rfnet.runtime.report OUTPUT_DIR``.

``runtime/infer.py`` and ``rfnet.runtime.client`` write ``report.html`` beside results.csv themselves
(``--no-report`` to skip); this rebuilds it, e.g. for a folder written before the report existed
(its missing thumbnails are made from the overlays first) or an ``rfnet.evaluate`` folder
(per_image.csv: adds predicted against true vCDR and, with glaucoma labels, the ROC curve).
The page is :mod:`rfnet.common.report`. Exit status: 0 written, 2 not an output folder.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rfnet.common.cli import ExitCode, setup_logging
from rfnet.common.report import ensure_thumbnails, write_report

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rfnet.runtime.report", description=__doc__.split("\n\n")[0])
    p.add_argument("output", type=Path, help="output folder of runtime/infer.py, rfnet.runtime.client or rfnet.evaluate")
    p.add_argument("--title", help="page title (default: the folder's name)")
    p.add_argument("--no-thumbnails", action="store_true", help="do not make missing thumbnails from the overlays")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        if not args.no_thumbnails:
            made = ensure_thumbnails(args.output)
            if made:
                log.info("made %d thumbnail(s) from the overlays", made)
        path = write_report(args.output, args.title)
    except (OSError, ValueError) as exc:  # FileNotFoundError names the folder and what it lacks
        log.error("%s", exc)
        return ExitCode.USAGE
    print(f"wrote {path}")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
