"""The FastAPI app: probes, metrics, model listing, sentiment, and the generation routers.

Every error leaves as the OpenAI error shape `{"error": {"message", "type", "param", "code"}}`, except
under /v2 (the Open Inference Protocol, rest_oip.py), whose error body is `{"error": "<message>"}`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.api import rest_chat, rest_native, rest_oip, rest_openai, rest_tokens
from service.api.admission import AdmissionMiddleware
from service.api.core import InferenceCore, ModelView
from service.api.errors import ApiError, ErrorKind, invalid, is_oip_path
from service.api.middleware import OPEN_PATHS, ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from service.api.rest_support import add_body_schemas, adopt_request_id, parse_body, request_id
from service.api.schemas import SentimentBody
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(core: InferenceCore, settings: Settings) -> FastAPI:
    app = FastAPI(title="seqserve", version="1", docs_url="/docs", redoc_url=None)
    app.state.core = core
    app.include_router(rest_native.router)
    app.include_router(rest_openai.router)
    app.include_router(rest_chat.router)
    app.include_router(rest_tokens.router)
    app.include_router(rest_oip.router)
    _add_routes(app)
    _add_error_handlers(app, settings)
    _add_openapi(app, bool(settings.api_key))
    # Added last = outermost: the key is checked before a body is read, the admission check (inside
    # the body limit) sees the whole body, and every response, the refusals of all three included,
    # carries the request id.
    app.add_middleware(AdmissionMiddleware, core=core, retry_after_s=settings.retry_after_s)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_openapi(app: FastAPI, needs_key: bool) -> None:
    """/openapi.json with the JSON bodies the routes parse themselves, and (with an API key) the
    bearer scheme every operation but the probes needs, so /docs can send the key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = add_body_schemas(get_openapi(title=app.title, version=app.version, routes=app.routes))
            if needs_key:
                schemes = schema["components"].setdefault("securitySchemes", {})
                schemes["bearer"] = {"type": "http", "scheme": "bearer"}
                for path, operations in schema["paths"].items():
                    if path not in OPEN_PATHS:
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (models may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 when models are loaded and warmed (policy in registry.py), 503 while draining."""
        core: InferenceCore = request.app.state.core
        ready, reason = core.registry.readiness()
        if core.draining:
            ready, reason = False, "draining"
        models = {m.name: {"state": m.state, "error": m.error or None} for m in core.models()}
        body = {"ready": ready, "reason": reason, "models": models}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.SCRAPE_REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, object]:
        """OpenAI's model list, each entry extended with task, state and the reason a model is not served."""
        core: InferenceCore = request.app.state.core
        async with core.track("/v1/models", request_id(request)):
            return {"object": "list", "data": [_model_json(m) for m in core.models()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, request: Request) -> dict[str, object]:
        core: InferenceCore = request.app.state.core
        async with core.track("/v1/models", request_id(request)):
            for m in core.models():
                if m.name == name:
                    return _model_json(m)
            raise ApiError(ErrorKind.NOT_FOUND, f"model: {name!r} not found", "model")

    @app.post("/v1/sentiment")
    async def sentiment(request: Request) -> JSONResponse:
        """A label and the probability of every label, per text, batched with other callers' texts."""
        core: InferenceCore = request.app.state.core
        async with core.track("/v1/sentiment", request_id(request)) as record:
            body = await parse_body(request, SentimentBody)
            adopt_request_id(request, record, body.request_id)
            name, results = await core.classify(record, body.model, body.texts)
            payload = {
                "id": record.request_id,
                "model": name,
                "results": [{"label": r.label, "probabilities": r.probabilities} for r in results],
            }
            return JSONResponse(payload)


def _model_json(m: ModelView) -> dict[str, object]:
    return {
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "seqserve",
        "task": m.task or None,
        "architecture": m.architecture or None,
        "state": m.state,
        "ready": m.ready,
        "error": m.error or None,
        "context_length": m.context_length or None,
        "labels": m.labels or None,
        "provider": m.provider or None,
        "default": m.is_default,
        "parameters": m.parameters or None,
    }


def _add_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {}
        if exc.kind is ErrorKind.RESOURCE_EXHAUSTED or exc.retry_after:
            headers["retry-after"] = str(settings.retry_after_s)
        return JSONResponse(exc.body_for(request.url.path), status_code=exc.kind.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or "body"
        error = invalid(param, first["msg"])
        return JSONResponse(error.body_for(request.url.path), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = ErrorKind.NOT_FOUND if exc.status_code == 404 else ErrorKind.INVALID_ARGUMENT
        error = ApiError(kind, str(exc.detail))
        if is_oip_path(request.url.path):
            return JSONResponse(
                error.oip_body(), status_code=exc.status_code, headers=getattr(exc, "headers", None)
            )
        body = error.body()
        body["error"]["code"] = exc.status_code
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        error = ApiError(ErrorKind.INTERNAL, "internal server error")
        return JSONResponse(error.body_for(request.url.path), status_code=500)
