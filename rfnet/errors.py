"""The root of every error the project raises on purpose (torch-free, dependency-free).

Each package has one base class, and every error it raises on purpose derives from it:

=============  =========================================  ==========================================
package        base                                       e.g.
=============  =========================================  ==========================================
``rfnet``      :class:`RFNetError` (this module)          ImageReadError, CheckpointError, MetadataError,
                                                          BackendError, DatasetLayoutError
``export``     ``rfnet.export.errors.ExportError``              GraphCheckError, TargetError, SimplifyError
``runtime``    ``rfnet.runtime.errors.DeploymentError``         ManifestError, ManifestMismatchError
``benchmarks`` ``rfnet.benchmarks.errors.BenchmarkError``       UsageError, NotRunError
=============  =========================================  ==========================================

The other three bases derive from :class:`RFNetError`, so a command-line ``main()`` catches
``RFNetError`` (or its own package's base) instead of a long tuple, and turns it into an
exit code from :class:`rfnet.common.cli.ExitCode`. Many errors also derive from the
built-in class that describes them (``ValueError`` for bad input, ``FileExistsError``, ...),
so code that catches those keeps working. The message always names the file or the value
and the problem.
"""
from __future__ import annotations


class RFNetError(Exception):
    """Base of every error raised on purpose by the ``rfnet`` package, and of the other packages' bases."""


class UsageError(RFNetError, ValueError):
    """A value the user gave (an argument, an option, a config key) cannot be used; the message names it."""
