"""The local engine: one streaming pass over the audit set's files, in the order of the listing.

Every batch goes through the per-batch function (:class:`fairgate.engine.batch.BatchPass`)
that the Spark engine runs on its executors too; this engine only reads the batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fairgate.engine.batch import BatchPass, CountResult, PassSpec, finish
from fairgate.inputs.audit import AuditSet
from fairgate.inputs.model import Predictor

if TYPE_CHECKING:
    from fairgate.report.progress import Progress


def count_local(audit: AuditSet, spec: PassSpec, models: Sequence[Predictor | None],
                progress: Progress | None = None) -> tuple[CountResult, dict[str, object]]:
    """Joint counts (and row samples) of the whole audit set in one pass; engine details.
    ``progress`` counts the rows of each batch as it is read."""
    teacher, student, reference = models
    assert teacher is not None and student is not None
    p = BatchPass(spec, teacher, student, reference, audit.path)
    batches = 0
    try:
        for path, offset, batch in audit.batches():
            p.add(batch, path, offset)
            batches += 1
            if progress is not None:
                progress.update(batch.num_rows)
    except BaseException:
        if progress is not None:
            progress.close(done=False)
        raise
    if progress is not None:
        progress.close()
    present = [m for m in models if m is not None]
    return finish(p.partial(), spec, present, audit.path), {"name": "local", "batches": batches}
