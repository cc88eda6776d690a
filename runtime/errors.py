"""The base of every error the deployment runtime raises on purpose (torch-free)."""
from __future__ import annotations

from rfnet.errors import RFNetError


class DeploymentError(RFNetError):
    """Base of the runtime package's own errors (engine manifests). The backend errors it raises
    come from the shared interface (``rfnet.common.backend.BackendError``, also an RFNetError)."""
