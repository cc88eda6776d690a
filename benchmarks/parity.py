"""Parity rules: does each faster path keep the reference's accuracy?

For every benchmarked runner other than the reference itself:

* ``|Dice_disc(model) - Dice_disc(reference)| <= max_dice_drop[precision]`` and the same for
  the cup, both Dice measured against the ground truth and averaged over the images. The
  difference is taken in absolute value: a path that changes the masks enough to move Dice
  by more than the tolerance does not keep the same masks, whichever way Dice moved.
  Defaults: fp32 0.001 and fp16 0.001 (0.1 Dice point), int8 0.01 (1 point);
* optionally, mean mask agreement (Dice of the model's masks against the reference's masks)
  ``>= min_agreement[precision]`` for disc and cup;
* every image the reference processed must be processed (a crash or a wrong output shape on
  an image is a failure), and a model that failed to load or run fails.

Runners that were *not run* (library or GPU missing here) are listed but are not failures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Dice units: 0.001 = 0.1 Dice point (Dice in percent, as the paper reports it).
DEFAULT_MAX_DICE_DROP = {"fp32": 0.001, "fp16": 0.001, "int8": 0.01}


@dataclass
class ParityRules:
    """Tolerances by precision (``fp32``, ``fp16``, ``int8``)."""

    max_dice_drop: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_DICE_DROP))
    min_agreement: dict[str, float | None] = field(default_factory=lambda: {"fp32": None, "fp16": None, "int8": None})

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_dice_difference": dict(self.max_dice_drop), "min_mask_agreement": dict(self.min_agreement),
                "units": "Dice in [0, 1]; 0.001 = 0.1 Dice point"}


def check_result(result: dict[str, Any], reference: dict[str, Any], rules: ParityRules) -> dict[str, Any]:
    """Parity verdict of one runner's result against the reference result.

    Args:
        result: one entry of the report's ``results`` (``status``, ``precision``,
            ``end_to_end``, ``accuracy``).
        reference: the reference entry (same keys; ``status`` must be ``ok``).
    Returns:
        ``{"checked", "passed", "precision", "max_abs_dice_difference", "min_agreement",
        "failures": [reasons]}``; ``checked`` is False (and ``passed`` None) for not-run runners.
    """
    precision = str(result.get("precision") or "fp32")
    tol = rules.max_dice_drop.get(precision, rules.max_dice_drop["fp32"])
    min_agree = rules.min_agreement.get(precision)
    verdict: dict[str, Any] = {"checked": True, "passed": None, "precision": precision,
                               "max_abs_dice_difference": tol, "min_agreement": min_agree, "failures": []}
    status = result.get("status")
    if status == "not run":
        verdict.update(checked=False)
        return verdict
    fails: list[str] = verdict["failures"]
    if status != "ok":
        fails.append(f"did not run to the end: {result.get('reason', status)}")
        verdict["passed"] = False
        return verdict
    acc, ref_acc = result.get("accuracy") or {}, reference.get("accuracy") or {}
    ref_ok = (reference.get("end_to_end") or {}).get("images", 0)
    done = (result.get("end_to_end") or {}).get("images", 0)
    if done < ref_ok:
        fails.append(f"processed {done} images, the reference {ref_ok} "
                     f"({(result.get('end_to_end') or {}).get('failed_images', '?')} failed)")
    for what, key in (("model-only timing", "model_only"), ("pipelined run", "pipeline")):
        for b, entry in (result.get(key) or {}).items():
            if entry.get("status") == "failed":
                fails.append(f"{what} at batch {b} failed: {entry.get('reason')}")
            elif key == "pipeline" and entry.get("failed_images"):
                fails.append(f"{what} at batch {b}: {entry['failed_images']} images failed")
    for part in ("disc", "cup"):
        mine, ref = acc.get(f"dice_{part}"), ref_acc.get(f"dice_{part}")
        if mine is None or ref is None:
            fails.append(f"no {part} Dice to compare (model {mine}, reference {ref})")
            continue
        diff = abs(float(mine) - float(ref))
        if diff > tol:
            fails.append(f"{part} Dice {mine:.4f} vs reference {ref:.4f}: |difference| {diff:.4f} > {tol:g} ({precision})")
        if min_agree is not None:
            a = (acc.get("agreement_vs_reference") or {}).get(part)
            if a is None:
                fails.append(f"no {part} mask agreement with the reference")
            elif a < min_agree:
                fails.append(f"{part} mask agreement {a:.4f} < {min_agree:g} ({precision})")
    verdict["passed"] = not fails
    return verdict


def overall(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"passed", "checked", "not_run", "failed": [ids with reasons]}`` over all results."""
    failed = [{"id": r["id"], "failures": r["parity"]["failures"]}
              for r in results if r.get("parity", {}).get("checked") and r["parity"].get("passed") is False]
    checked = [r["id"] for r in results if r.get("parity", {}).get("checked") and not r.get("is_reference")]
    not_run = [r["id"] for r in results if r.get("status") == "not run"]
    return {"passed": not failed, "checked": checked, "not_run": not_run, "failed": failed}
