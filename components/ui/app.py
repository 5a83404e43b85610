"""The web app: FastAPI routes over the registry views (components.ui.registry), Jinja2 pages.

Server-rendered HTML, no JavaScript build: every number on a page is in the HTML a test (or a person
with curl) can read, and the app starts in about a second next to a tracking server.
"""

from __future__ import annotations

import getpass
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from components.ui import registry
from components.ui.plots import line_chart

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
# Headers an authenticating reverse proxy sets (oauth2-proxy, Apache/nginx auth modules).
USER_HEADERS = ("x-forwarded-user", "x-remote-user", "remote-user")
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class Settings:
    tracking_uri: str
    allow_promotion: bool = False
    # With a team's authenticating proxy in front: only these users (its user header) may promote.
    promoters: tuple[str, ...] = ()
    repo: Path = Path(".")  # where concepts/NAME/photos are found
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conceptlab-ui-")))


def proxy_user(request: Request) -> str | None:
    """The user an authenticating proxy in front of the app names, if any."""
    return next((request.headers[h] for h in USER_HEADERS if request.headers.get(h)), None)


def who(request: Request) -> str:
    """The person behind a request: a proxy's user header, else $CONCEPTLAB_UI_USER, else the server's
    own account (marked as such, since it names whoever started the app, not who clicked)."""
    for header in USER_HEADERS:
        if request.headers.get(header):
            return request.headers[header]
    return os.environ.get("CONCEPTLAB_UI_USER") or f"{getpass.getuser()} (server account)"


def create_app(settings: Settings) -> FastAPI:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    # One registry per app: also the process-wide default, so code that resolves `models:/` URIs
    # through MLflow's globals (artifact downloads) reads the same registry as the pages.
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    app = FastAPI(title="conceptlab", docs_url=None, redoc_url=None)
    artifact_lock = threading.Lock()

    def client() -> MlflowClient:
        return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        context.update(settings=settings, user=who(request))
        return TEMPLATES.TemplateResponse(request, name, context, status_code=status)

    def load_concept(name: str) -> registry.Concept:
        try:
            return registry.concept(client(), name)
        except MlflowException as exc:
            raise HTTPException(404, f"no registered concept named {name!r} in {settings.tracking_uri}") from exc

    @app.exception_handler(HTTPException)
    async def _error(request: Request, exc: HTTPException):
        return page(request, "error.html", status=exc.status_code, message=exc.detail)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "tracking_uri": settings.tracking_uri, "allow_promotion": settings.allow_promotion}

    @app.get("/", response_class=HTMLResponse)
    def concepts_page(request: Request):
        return page(request, "concepts.html", concepts=registry.concepts(client()))

    @app.get("/concepts/{name}", response_class=HTMLResponse)
    def concept_page(request: Request, name: str, a: str | None = None, b: str | None = None):
        concept = load_concept(name)
        numbers = [v.version for v in concept.versions]
        # The side-by-side defaults to the champion and the newest other version.
        a = a if a in numbers else concept.champion or (numbers[0] if numbers else None)
        b = b if b in numbers else next((n for n in reversed(numbers) if n != a), a)
        c = client()
        losses = {v.version: loss_chart(c, v.run_id) for v in concept.versions}
        return page(
            request,
            "concept.html",
            concept=concept,
            chart=metrics_chart(concept),
            losses=losses,
            photos=photos(settings.repo, name),
            shown=registry.SHOWN,
            labels=registry.LABELS,
            a=concept.version(a) if a else None,
            b=concept.version(b) if b else None,
            promoted=request.query_params.get("promoted"),
        )

    @app.get("/concepts/{name}/versions/{version}/grid.png")
    def grid(name: str, version: str):
        v = load_concept(name).version(version)
        if v is None:
            raise HTTPException(404, f"{name} has no version {version}")
        with artifact_lock:  # one download per run, however many tabs ask at once
            path = artifact(client(), settings.cache_dir, v.eval_run_id, registry.GRID)
        if path is None:
            raise HTTPException(404, f"{name} v{version}: its evaluation run has no {registry.GRID}")
        return FileResponse(path, media_type="image/png")

    @app.get("/concepts/{name}/photos/{filename}")
    def photo(name: str, filename: str):
        found = {p.name: p for p in photos(settings.repo, name)}
        if filename not in found:
            raise HTTPException(404, f"no photo {filename} for {name}")
        return FileResponse(found[filename])

    @app.post("/concepts/{name}/promote")
    async def promote(request: Request, name: str):
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            # A form on another site posting to this app in a colleague's browser.
            raise HTTPException(403, f"promotion refused: the request came from another site ({origin})")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        version = form.get("version", "")
        if not settings.allow_promotion:
            raise HTTPException(
                403,
                "promotion by hand is off: this app is read-only. Restart it with "
                "`conceptlab ui --allow-promotion` to move champion by hand, or let the gate decide "
                "(`conceptlab flow promote`).",
            )
        user = who(request)
        if settings.promoters and proxy_user(request) not in settings.promoters:
            raise HTTPException(
                403,
                f"promotion refused: {user} may not move champion (allowed: {', '.join(settings.promoters)}); "
                "ask one of them, or let the gate decide",
            )
        concept = load_concept(name)
        if concept.version(version) is None:
            raise HTTPException(400, f"{name} has no version {version!r}")
        try:
            registry.promote_by_hand(client(), name, version, user)
        except MlflowException as e:  # the registry's own permissions (MLflow basic-auth: only the gate)
            raise HTTPException(403, f"the registry refused to move champion: {e.message}") from None
        return RedirectResponse(f"/concepts/{quote(name)}?promoted={quote(version)}", status_code=303)

    from components.ui.playground import add_playground

    add_playground(app, settings, page, client)
    return app


def metrics_chart(concept: registry.Concept) -> str:
    xs = [int(v.version) for v in concept.versions]
    series = {registry.LABELS[k]: [v.metrics.get(k) for v in concept.versions] for k in registry.PLOTTED}
    return line_chart(xs, series, "version", x_ticks=[(x, f"v{x}") for x in xs], css_class="chart metrics")


def loss_chart(client, run_id: str) -> str:
    history = sorted(client.get_metric_history(run_id, registry.LOSS), key=lambda m: m.step)
    return line_chart([m.step for m in history], {"loss": [m.value for m in history]}, "step", css_class="chart loss")


def photos(repo: Path, name: str) -> list[Path]:
    folder = repo / "concepts" / name / "photos"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def artifact(client, cache_dir: Path, run_id: str, path: str) -> Path | None:
    """A run's artifact file, downloaded once (a run's artifacts do not change)."""
    local = cache_dir / run_id / path
    if not local.is_file():
        try:
            local.parent.mkdir(parents=True, exist_ok=True)  # MLflow writes the file under its base name
            client.download_artifacts(run_id, path, str(local.parent))
        except Exception:  # absent, or the store is unreachable: the page says "no grid"
            return None
    return local if local.is_file() else None
