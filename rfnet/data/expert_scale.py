"""The experts' scale of a dataset's vertical CDR (torch-free): ``train.fit_expert_scale``.

Drishti-GS's experts give each image a CDR (``<id>_cdrValues.txt``) that is larger than the
vertical CDR of the all-agree masks a model is trained on (docs/lab/results-log.md, "A floor under the
MAE against the experts"). :func:`dataset_expert_scale` fits the line from the masks' vCDR to
the experts' mean over a dataset's ground truth (a training split only), so a model can report
its vCDR on the experts' scale too (``grading.vcdr_expert_scale``, ``rfnet.vcdr_expert_scale``).
"""
from __future__ import annotations

from typing import Any

from rfnet.common.metrics import fit_expert_scale, vcdr
from rfnet.errors import UsageError


def dataset_expert_scale(dataset: Any) -> tuple[tuple[float, float], int]:
    """``((a, b), n)``: experts' mean CDR ~ a * (masks' vCDR) + b over the ``n`` usable items.

    ``dataset`` is a :class:`rfnet.data.base.FundusDataset` (bad items are skipped as it records
    them). Raises ``UsageError`` when fewer than 3 items carry the experts' CDRs.
    """
    x, y = [], []
    if getattr(dataset, "groups", None) is not None:  # a mixture: only the items that carry expert CDRs (Drishti-GS's) are read
        dataset = dataset.subset([e.name for e in dataset.entries if "cdr_file" in e.extra])
    for i in range(len(dataset)):
        sample = dataset.get(i)
        expert = None if sample is None else sample.meta.get("expert_cdr_mean")
        if expert is not None:
            x.append(vcdr(sample.disc, sample.cup))
            y.append(float(expert))
    if len(x) < 3:
        raise UsageError(f"train.fit_expert_scale: {dataset} has the experts' CDRs of {len(x)} images, 3 or more "
                         "are needed (Drishti-GS has them; other datasets: leave fit_expert_scale off)")
    try:
        return fit_expert_scale(x, y), len(x)
    except ValueError as exc:
        raise UsageError(f"train.fit_expert_scale on {dataset}: {exc}") from None
