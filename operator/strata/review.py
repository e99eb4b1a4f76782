"""`strata review`: a person's side of a FeedbackPolicy's review queue.

The queue is the policy's status.review (the operator lists the outputs its monitors flagged);
a verdict is the annotation review.strata.dev/<id>=approve|reject on the policy, which is also
how to resolve one with kubectl alone:

    kubectl annotate feedbackpolicy assistant review.strata.dev/3f2a9c1d0b7e=reject
"""

from __future__ import annotations

from typing import Any

from strata.constants import API_VERSION, REVIEW_ANNOTATION_PREFIX, REVIEW_VERDICTS

FIELD_MANAGER = "strata-review"


class ReviewError(Exception):
    """What the person asked for cannot be done; the message says why and what to do."""


def review_table(policy: dict[str, Any]) -> str:
    """Pure: the open items of a policy's status.review, as a kubectl-like table."""
    name = policy["metadata"]["name"]
    review = (policy.get("status") or {}).get("review")
    if review is None:
        return (f"FeedbackPolicy {name} has no review queue yet: the operator lists one once it read the "
                f"target's sidecars (and spec.review.queueFlagged is true).")
    if not review.get("items"):
        return (f"No flagged output of FeedbackPolicy {name} waits for review "
                f"({review.get('resolved', 0)} resolved).")
    rows = [("ID", "SOURCE", "TIME", "SCORE/GROUP", "EXCERPT")]
    for item in review.get("items") or []:
        flagged = f"{item['score']:.2f}" if item.get("score") is not None else item.get("group") or ""
        rows.append((item["id"], item["source"], item.get("time") or "", flagged,
                     item.get("excerpt", "").replace("\n", " ")[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["   ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in rows]
    shown = len(rows) - 1
    lines.append(f"{review.get('open', 0)} open ({shown} shown), {review.get('resolved', 0)} resolved")
    lines += [f"problem: {problem}" for problem in review.get("problems") or []]
    return "\n".join(lines)


def resolution_patch(policy: dict[str, Any], item_id: str, verdict: str) -> dict[str, Any]:
    """Pure: the merge patch recording a verdict, once the item is known to be listed."""
    if verdict not in REVIEW_VERDICTS:
        raise ReviewError(f"verdict {verdict!r}: use one of {', '.join(REVIEW_VERDICTS)}")
    listed = {item["id"] for item in ((policy.get("status") or {}).get("review") or {}).get("items") or []}
    if item_id not in listed:
        raise ReviewError(f"FeedbackPolicy {policy['metadata']['name']} lists no open item {item_id!r}; "
                          f"see `strata review list {policy['metadata']['name']}`")
    return {"metadata": {"annotations": {f"{REVIEW_ANNOTATION_PREFIX}{item_id}": verdict}}}


def _policy(namespace: str, name: str) -> dict[str, Any]:
    from strata import k8s
    from strata.api import FEEDBACK_POLICY

    found = k8s.list_objects(FEEDBACK_POLICY, namespace, name)
    if not found:
        raise ReviewError(f'FeedbackPolicy "{name}" not found in namespace "{namespace}"')
    return found[0]


def list_review(namespace: str, name: str) -> str:
    return review_table(_policy(namespace, name))


def resolve_review(namespace: str, name: str, item_id: str, verdict: str) -> str:
    from strata import k8s

    patch = resolution_patch(_policy(namespace, name), item_id, verdict)
    k8s.merge_patch_object(API_VERSION, "FeedbackPolicy", namespace, name, patch, field_manager=FIELD_MANAGER)
    return f"feedbackpolicy.strata.dev/{name} annotated: {REVIEW_ANNOTATION_PREFIX}{item_id}={verdict}"
