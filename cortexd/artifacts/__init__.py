"""Content-addressed artifacts (issue 12): blobs named by sha256, moved in chunks.

``open_artifacts`` builds the store that follows the hub's own (SQLite: the directory
backend; PostgreSQL: the shared one) and the service the control process serves.
"""

from cortexd.artifacts.backend import ArtifactStore
from cortexd.artifacts.rules import ArtifactError, Retention
from cortexd.artifacts.service import ArtifactsService
from cortexd.artifacts.uploads import Uploads
from cortexd.config import Settings
from cortexd.ingress.auth import Authenticator
from cortexd.store import PG_SCHEMES, Store

__all__ = ["ArtifactError", "ArtifactStore", "ArtifactsService", "open_artifacts",
           "make_store"]


def make_store(settings: Settings) -> ArtifactStore:
    url = settings.store_url
    if url.startswith(PG_SCHEMES):
        from cortexd.artifacts.pgstore import PgArtifacts

        return PgArtifacts(url)
    from pathlib import Path

    from cortexd.artifacts.localstore import LocalArtifacts

    root = settings.artifact_dir or settings.state_dir / "artifacts"
    return LocalArtifacts(root, Path(url.removeprefix("sqlite:///")))


async def open_artifacts(settings: Settings, tasks: Store,
                         auth: Authenticator) -> ArtifactsService:
    store = make_store(settings)
    await store.open()
    uploads = Uploads(settings.artifact_uploads_per_client, settings.artifact_partial_max_bytes)
    uploads.partial_bytes = sum(p.committed for p in await store.partials())
    return ArtifactsService(
        store, tasks, auth, max_bytes=settings.artifact_max_bytes,
        idle_timeout_s=settings.artifact_idle_timeout_s, uploads=uploads,
        retention=Retention(task_ref_s=settings.artifact_task_ref_retention_s,
                            grace_s=settings.artifact_unreferenced_grace_s,
                            partial_ttl_s=settings.artifact_partial_ttl_s))
