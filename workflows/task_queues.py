"""Task queue names: the main queue, and one per set of runner labels."""

from collections.abc import Sequence


def runner_task_queue(base: str, labels: Sequence[str]) -> str:
    """The task queue for step activities of pipelines with these ``runner_labels``; a worker
    started with ``--labels`` of exactly that set serves it."""
    clean = sorted({label.strip() for label in labels if label.strip()})
    return f"{base}@{','.join(clean)}" if clean else base
