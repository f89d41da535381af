"""The city's 3D scene: the exported GLB, its metadata and the page that shows them.

The files come from :func:`twin.scene.export_scene`, written to the folder in ``app.state.scene_dir`` (a
:class:`pathlib.Path`, or None when the server runs without a scene).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from twin.scene import GLB_NAME, META_NAME
from viewer.deps import Reader

router = APIRouter(tags=["scene"])

PAGE = Path(__file__).resolve().parent.parent / "static" / "scene.html"
# Revalidate on every load (cheap: FileResponse sends ETag and Last-Modified), so a re-exported scene shows at once.
_NO_CACHE = {"Cache-Control": "no-cache"}


def _scene_file(request: Request, name: str) -> Path:
    """Return the path of *name* in the app's scene folder.

    Raises:
        HTTPException: 404 when the server has no scene folder or the file has not been exported there.
    """
    scene_dir: Path | None = getattr(request.app.state, "scene_dir", None)
    if scene_dir is None:
        raise HTTPException(404, "this server has no 3D scene: start it with a scene folder (app.state.scene_dir)")
    path = Path(scene_dir) / name
    if not path.is_file():
        raise HTTPException(404, f"no {name} in the scene folder {scene_dir}: export it with twin.scene.export_scene")
    return path


def _send(request: Request, name: str, media_type: str) -> FileResponse:
    """Send *name*, or its gzip copy when the client accepts gzip and the copy is not older than the file."""
    path = _scene_file(request, name)
    headers = {**_NO_CACHE, "Vary": "Accept-Encoding"}
    gz = path.with_name(path.name + ".gz")
    accepts_gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    if accepts_gzip and gz.is_file() and gz.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        return FileResponse(gz, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get(
    "/api/scene.glb",
    summary="The city's 3D scene as binary glTF (Y-up, metres from the origin in the metadata)",
    response_class=FileResponse,
    responses={200: {"content": {"model/gltf-binary": {}}}, 404: {"description": "no scene exported"}},
)
def scene_glb(request: Request, _who: Reader) -> FileResponse:
    return _send(request, GLB_NAME, "model/gltf-binary")


@router.get(
    "/api/scene/meta.json",
    summary="The scene's metadata: origin, legend, per mesh the asset ids with triangle ranges, asset attributes",
    response_class=FileResponse,
    responses={404: {"description": "no scene exported"}},
)
def scene_meta(request: Request, _who: Reader) -> FileResponse:
    return _send(request, META_NAME, "application/json")


@router.get("/scene", include_in_schema=False)
def scene_page() -> FileResponse:
    return FileResponse(PAGE, headers=_NO_CACHE)
