"""The BentoML service (spec section 7): a thin HTTP layer over `serving.state.ServingState`.

Start it with `advocacy serve` (or `bentoml serve serving.service:Advocacy`). At start-up a
background thread loads the model that `@champion` names in the MLflow registry and the current
feature snapshot; `/readyz` answers 503 until both are in memory, and keeps doing so (with the reason
in the log) while the registry is unreachable or the artifact unreadable. Every
`ADVOCACY_RELOAD_SECONDS` (30 s by default) it looks for a new snapshot or a moved `@champion` and
swaps them in whole, so a request sees one model and one snapshot, never a mix, and none is dropped.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from features.contracts import DataContractError, as_utc
from models.registry import ChampionUnavailableError, load_champion, resolve_champion
from serving import patches
from serving.answers import DISK_FULL, LOADING, MissingFieldError, disk_full, invalid_body, not_ready
from serving.answers import error as _error
from serving.auth import OPEN_PATHS, BearerAuth, bound_host, check_bind
from serving.bento_model import load_bento_model
from serving.crm_sync import start_crm_sync
from serving.gate import RequestGate
from serving.headers import FrameGuard
from serving.limits import BodyLimit
from serving.page_schemas import (
    CampaignsRequest,
    CampaignsResponse,
    CampaignWaveRequest,
    CampaignWaveResponse,
    ReportRequest,
    ReportResponse,
    WorklistRequest,
    WorklistResponse,
)
from serving.schemas import (
    AskRow,
    AsksRequest,
    AsksResponse,
    DisagreementsRequest,
    DisagreementsResponse,
    ExplainRequest,
    Explanation,
    FeatureRecord,
    PlanRequestBody,
    PlanResponse,
    ReferencesRequest,
    ReferencesResponse,
    ScoreFeaturesRequest,
    ScoreRequest,
    ScoreResponse,
    SearchRequest,
    SearchResponse,
)
from serving.state import ServingState, load_state
from serving.store import IncompatibleStateError, UnknownCustomersError
from storage.asklog import ConflictingAskError
from storage.reports import ReportUnavailableError
from storage.settings import Settings, get_settings
from storage.snapshots import SnapshotRefusedError, base_refusal, current_snapshot_dir, read_meta
from usecases.plans import DEFAULT_CONFIDENCE, PlanRequest, Schedule
from usecases.references import ReferenceRequest, UnknownDealError

STATIC = Path(__file__).parent / "static"
INLINE_IDS = 8  # /score requests up to this many ids run on the event loop
RETRY_SECONDS = (2.0, 60.0)  # first and longest wait between attempts to load

log = logging.getLogger("bentoml.advocacy")


def _running_from_bento() -> bool:
    version = getattr(bentoml.server_context, "bento_version", None)
    return version not in (None, "not available")


class StateHolder:
    """Loads the serving state in the background, retries until it can, and swaps in newer ones."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state: ServingState | None = None
        # What a 503 says the service waits for; never the error's text, which names files and stores
        # of the server: the log has that (`serving.answers.not_ready`).
        self.not_ready = LOADING
        self._refused: Path | None = None  # a snapshot folder refused once, not read or reported again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="advocacy-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _check_base(self, folder: Path, current: ServingState | None) -> None:
        """Refuse a snapshot that would empty the served base (`storage.snapshots.base_refusal`).

        One published with --force-snapshot may shrink the base, never empty it.
        """
        meta = read_meta(folder)
        customers = int(meta.get("customers", 1))
        served = None if current is None or meta.get("forced") else len(current.store)
        problem = base_refusal(customers, served, self.settings.min_snapshot_share)
        if problem:
            raise SnapshotRefusedError(f"not serving snapshot {folder.name}: {problem}")

    def _load(self, current: ServingState | None = None) -> ServingState:
        self._check_base(current_snapshot_dir(self.settings.feature_store_path()), current)
        try:
            ref, bundle = load_champion(self.settings)
        except ChampionUnavailableError:
            # Inside a built Bento the packed model is the one to serve when no registry is reachable.
            if not _running_from_bento():
                raise
            ref, bundle = load_bento_model(settings=self.settings)
        if current is not None and current.champion == ref:
            bundle = current.bundle  # same model, new snapshot: no need to download it again
        return load_state(self.settings, ref, bundle)

    def _run(self) -> None:
        delay = RETRY_SECONDS[0]
        while not self._stop.is_set():
            try:
                state = self._load()
            except (ChampionUnavailableError, IncompatibleStateError, FileNotFoundError, ValueError, OSError) as err:
                self.not_ready = not_ready(err)
                log.error("advocacy service NOT READY: %s (retrying in %.0f s)", err, delay)
            except Exception as err:  # anything else: still never serve half a state
                self.not_ready = not_ready(err)
                log.exception("advocacy service NOT READY: unexpected error loading the state (retrying)")
            else:
                self._install(state)
                self._announce(state, "ready")
                break
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_SECONDS[1])
        while not self._stop.wait(self.settings.reload_seconds):
            self._refresh()
            self._refresh_report()

    def _refresh_report(self) -> None:
        """Remake the kept program report if the ask log or the champion moved since it was made."""
        state = self.state
        if state is None:
            return
        try:
            state.refresh_report(force=False)
        except Exception as err:  # the data directory may be out of reach: keep the report there is
            log.warning("advocacy: could not remake the program report: %s", err)

    def _refresh(self) -> None:
        """Swap in a newer snapshot or champion; on any trouble keep serving what is loaded."""
        current = self.state
        if current is None:
            return
        try:
            folder = current_snapshot_dir(self.settings.feature_store_path())
            moved = not current.champion.source.startswith("bentoml:") and (
                resolve_champion(self.settings).version != current.champion.version
            )
            if folder in (current.snapshot_dir, self._refused) and not moved:
                return
            state = self._load(current)
        except SnapshotRefusedError as err:
            self._refused = folder
            log.error("advocacy: %s; keeping snapshot %s", err, current.snapshot_dir.name)
            return
        except Exception as err:
            log.warning("advocacy: keeping model version %s and the loaded snapshot: %s", current.champion.version, err)
            return
        self._install(state)
        self._announce(state, "reloaded")

    def _install(self, state: ServingState) -> None:
        # Everything loaded so far lives as long as the state: keep the garbage collector from walking
        # it on every full collection (pauses that show up as p99). Unfreeze first so a replaced
        # state can still be collected.
        gc.unfreeze()
        self.state = state
        gc.collect()
        gc.freeze()

    @staticmethod
    def _announce(state: ServingState, what: str) -> None:
        log.info(
            "advocacy service %s: model %s version %s (%s), snapshot %s as of %s with %d customers",
            what,
            state.champion.name,
            state.champion.version,
            state.champion.source,
            state.snapshot_dir.name,
            state.store.as_of.isoformat(),
            len(state.store),
        )


def _page(_: Request) -> Response:
    return FileResponse(STATIC / "index.html")


# The CSM page at "/" (it replaces BentoML's Swagger page there; the OpenAPI spec stays at /docs.json).
page_app = Starlette(routes=[Route("/", _page), Mount("/static", StaticFiles(directory=STATIC), name="static")])


@bentoml.asgi_app(page_app, path="/", name="page")
@bentoml.service(
    name="advocacy",
    traffic={"timeout": 30},
    workers=Settings().workers,
    threads=4,
    # BentoML's access log decodes the request's Content-Type as UTF-8 after the response has started,
    # and a header that is not (sent on a raw socket) then lost the body of a 200. The request gate
    # refuses every type but JSON, so the log loses nothing by leaving it out.
    logging={"access": {"request_content_type": False}},
)
class Advocacy:
    """Advocacy propensity scores, explanations, next best asks and reference candidates."""

    def __init__(self) -> None:
        # Every BentoML patch, here: BentoML builds this instance in each worker's start-up, before
        # the worker answers a request (importing this module patches nothing).
        settings = get_settings()
        patches.install(declared_routes(), header_timeout=settings.header_timeout_seconds)
        host = bound_host()
        if host is not None:
            token = settings.api_token.get_secret_value() if settings.api_token else None
            check_bind(host, token)  # raises: an open service must not listen beyond this machine
        self.holder = StateHolder(settings)
        self.holder.start()
        # With ADVOCACY_SYNC_TARGET, recorded asks reach the CRM within ADVOCACY_SYNC_SECONDS (serving.crm_sync).
        self.crm_sync = start_crm_sync(
            settings, lambda: None if self.holder.state is None else self.holder.state.bundle
        )
        ScoreFastPath.service = self

    def __is_ready__(self) -> bool:
        return self.holder.state is not None

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.holder.stop()
        if self.crm_sync is not None:
            self.crm_sync.stop()

    def _answer(self, route: Callable[[ServingState], Any]) -> Any:
        """Run one route on the loaded state; turn what a caller got wrong into a 4xx that says why,
        and a fault of the server into a 5xx that says what it was, never naming a path of the server."""
        state = self.holder.state
        if state is None:
            return _error(503, f"service not ready: {self.holder.not_ready}")
        try:
            return route(state)
        except UnknownCustomersError as err:
            return _error(404, str(err), customer_ids=err.ids)
        except UnknownDealError as err:
            return _error(404, str(err), opportunity_id=err.opportunity_id)
        except DataContractError as err:
            return _error(400, str(err), detail=err.problems)
        except ConflictingAskError as err:
            return _error(409, str(err), ask_id=err.ask_id, field=err.field)
        except ValidationError:
            # Requests were validated before this point: a failure here is ours, not the caller's.
            log.exception("advocacy: response failed validation")
            return _error(500, "internal error: the response failed validation (see the server log)")
        except ReportUnavailableError as err:  # a ValueError for the CLI; here a fault of the server's files
            log.error("advocacy: %s (%s)", err, err.detail)
            return _error(500, str(err))
        except (sqlite3.Error, OSError) as err:
            if not disk_full(err, sqlite_folder=self.holder.settings.ask_log_path().parent):
                raise
            log.error("advocacy: the disk is full, nothing of the request was stored: %s", err)
            return _error(507, DISK_FULL)
        except MissingFieldError as err:
            return _error(400, str(err), detail=err.detail())
        except ValueError as err:
            return _error(400, str(err))

    @bentoml.api(route="/score", input_spec=ScoreRequest, output_spec=ScoreResponse)
    async def score(self, customer_ids: list[str]) -> Any:
        """Scores, tier, next best ask, reasons and the points baseline for stored customers (1 to 1,000 ids)."""
        # JSON requests are answered by `ScoreFastPath` in front of this method, with the same code.
        return await self.score_response(customer_ids)

    async def score_response(self, customer_ids: list[str]) -> Response:
        def run() -> Any:
            # The body is assembled from JSON the response models made (see serving.results.ResultCache).
            return self._answer(lambda s: Response(s.score_ids_json(customer_ids), media_type="application/json"))

        # A few ids take about a millisecond: run them on the event loop, since handing work to a
        # thread costs more than that (GIL hand-offs). Bigger batches go to a thread so the loop
        # keeps answering other requests meanwhile.
        if len(customer_ids) <= INLINE_IDS:
            return run()
        return await anyio.to_thread.run_sync(run)

    @bentoml.api(route="/score_features", input_spec=ScoreFeaturesRequest, output_spec=ScoreResponse)
    def score_features(self, records: list[FeatureRecord]) -> Any:
        """The same results for feature rows the caller computed (every feature, null = unknown)."""
        rows = [r.model_dump() for r in records]
        return self._answer(lambda s: ScoreResponse.model_validate({"results": s.score_records(rows)}))

    @bentoml.api(route="/explain", input_spec=ExplainRequest, output_spec=Explanation)
    def explain(self, customer_id: str) -> Any:
        """The full explanation of one customer: every contribution, base value, points breakdown, history."""
        return self._answer(lambda s: Explanation.model_validate(s.explain(customer_id)))

    @bentoml.api(route="/references", input_spec=ReferencesRequest, output_spec=ReferencesResponse)
    def references(
        self,
        opportunity_id: str | None = None,
        industry: str | None = None,
        segment: str | None = None,
        use_case: str | None = None,
        k: int = 10,
    ) -> Any:
        """Customers to ask for a reference call for this deal or prospect, best first, guardrails respected."""

        def route(state: ServingState) -> Any:
            if opportunity_id is None and industry is None and segment is None and use_case is None:
                # Named as a missing field, as pydantic names one: the body holds nothing to name.
                raise MissingFieldError(
                    "opportunity_id", "name a deal (opportunity_id) or a prospect (industry, segment and use_case)"
                )
            request = ReferenceRequest(opportunity_id, industry, segment, use_case, k)
            return ReferencesResponse.model_validate({"candidates": state.references(request)})

        return self._answer(route)

    @bentoml.api(route="/search", input_spec=SearchRequest, output_spec=SearchResponse)
    def search(self, query: str, limit: int = 10) -> Any:
        """Customers by id prefix or name substring (case-insensitive), for the page's type-ahead."""
        return self._answer(lambda s: SearchResponse.model_validate({"customers": s.search(query, limit)}))

    @bentoml.api(route="/disagreements", input_spec=DisagreementsRequest, output_spec=DisagreementsResponse)
    def disagreements(self, tier: str | None = None, segment: str | None = None, limit: int = 50) -> Any:
        """Customers where the model and the points rule differ most, optionally of one model tier and segment."""
        return self._answer(
            lambda s: DisagreementsResponse.model_validate({"customers": s.disagreements(tier, segment, limit)})
        )

    @bentoml.api(route="/worklist", input_spec=WorklistRequest, output_spec=WorklistResponse)
    def worklist(self, limit: int = 50) -> Any:
        """The CSM page's worklist: the default needs, deliveries due from committed customers, advocates going cold."""
        return self._answer(lambda s: WorklistResponse.model_validate(s.worklist(limit)))

    @bentoml.api(route="/campaigns", input_spec=CampaignsRequest, output_spec=CampaignsResponse)
    def campaigns(self, limit: int = 50) -> Any:
        """Campaigns in progress: per type the need, yeses so far and pending asks; the next wave."""
        return self._answer(lambda s: CampaignsResponse.model_validate(s.campaigns(limit)))

    @bentoml.api(route="/campaign_wave", input_spec=CampaignWaveRequest, output_spec=CampaignWaveResponse)
    def campaign_wave(self, plan_id: str, wave: int) -> Any:
        """The asks one wave of a campaign planned, in the columns of `advocacy plan --out`."""
        return self._answer(lambda s: CampaignWaveResponse.model_validate(s.campaign_wave(plan_id, wave)))

    @bentoml.api(route="/report", input_spec=ReportRequest, output_spec=ReportResponse)
    def report(self, refresh: bool = False) -> Any:
        """The latest program report's tables and charts, for the page's tab (remade first with `refresh`)."""
        return self._answer(lambda s: ReportResponse.model_validate(s.report(refresh)))

    @bentoml.api(route="/plan", input_spec=PlanRequestBody, output_spec=PlanResponse)
    def plan(
        self,
        need: dict[str, int] | None = None,
        confidence: float = DEFAULT_CONFIDENCE,
        segment: str | None = None,
        industry: str | None = None,
        region: str | None = None,
        use_case: str | None = None,
        store: bool = True,
        waves: int = 1,
        wave_days: int = 14,
        as_of: datetime | None = None,
        plan_id: str | None = None,
    ) -> Any:
        """Whom to ask for what: per ask type the shortest list reaching the confidence, one ask per
        customer; with `waves`, wave 1 of a campaign; with a campaign's `plan_id`, its next wave."""
        when = None if as_of is None else as_utc(as_of)

        def route(state: ServingState) -> Any:
            if plan_id is not None:
                stored: dict[str, object] = {"need": need, "segment": segment, "industry": industry, "region": region}
                stored |= {"use_case": use_case, "waves": waves != 1, "wave_days": wave_days != 14}
                stored |= {"confidence": confidence != DEFAULT_CONFIDENCE}
                given = [name for name, value in stored.items() if value]
                if given:
                    raise ValueError(
                        f"plan_id: a next wave takes plan_id and as_of only; {', '.join(given)} are stored"
                    )
                return PlanResponse.model_validate(state.next_wave(plan_id, when))
            if not need:
                raise MissingFieldError(
                    "need", "name at least one ask type and how many yeses (or a campaign's plan_id)"
                )
            request = PlanRequest.from_options(need, confidence, segment, industry, region, use_case)
            made = state.plan(request, store, Schedule(waves, wave_days), when)
            return PlanResponse.model_validate(made)

        return self._answer(route)

    @bentoml.api(route="/asks", input_spec=AsksRequest, output_spec=AsksResponse)
    def asks(self, asks: list[AskRow]) -> Any:
        """Record asks and outcomes durably; re-sending an ask_id updates it. Guardrails see them at once."""
        rows = [a.model_dump() for a in asks]
        answer = self._answer(lambda s: AsksResponse(stored=s.record_asks(rows)))
        if self.crm_sync is not None and isinstance(answer, AsksResponse):
            self.crm_sync.queue(row["customer_id"] for row in rows)
        return answer


class ScoreFastPath:
    """`POST /score` with a JSON body, answered without BentoML's per-request API machinery.

    /score is the route other systems call per customer, and BentoML's generic API path (content
    negotiation, signature inspection, dependency injection, response post-processing) cost about
    0.5 ms of the 2.5 ms of server CPU a one-id request took, four times our handler (measured by
    benchmarks/api.py). This middleware answers those requests with the same request model, the same
    handler (`Advocacy.score_response`) and the same 400 body for invalid input as BentoML's path
    (`serving.answers.invalid_body`, which `serving.patches` makes BentoML answer with too). The route stays
    declared with `@bentoml.api`, so the OpenAPI document and BentoML's clients are served as before.
    It sits behind the request gate, the body limit and the token check and inside
    BentoML's metrics, tracing, access log and time limit, which all still apply.
    """

    service: Advocacy | None = None  # the worker's service instance, set when it starts

    def __init__(self, app: ASGIApp, path: str = "/score") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = ScoreFastPath.service
        if service is None or scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        # The request gate let only JSON through. Plain `application/json` (what nearly every client
        # sends) is answered here; with a parameter (a charset) it takes BentoML's path, which answers alike.
        if request.headers.get("content-type", "").strip().lower() != "application/json":
            await self.app(scope, receive, send)
            return
        try:
            body = await request.body()
        except ClientDisconnect:
            return
        try:
            parsed = ScoreRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            log.info("POST %s rejected with 400 (%d validation error(s))", self.path, exc.error_count())
            response: Response = invalid_body(exc)
        else:
            response = await service.score_response(parsed.customer_ids)
        await response(scope, receive, send)


def declared_routes() -> list[str]:
    """Every path the service answers: its APIs, BentoML's probes and documents, the page and its assets."""
    apis = [api.route for api in _service.apis.values()]
    return [*apis, *OPEN_PATHS, "/", "/schema.json", "/docs.json", "/static/"]


def _configured_token() -> str | None:
    token = get_settings().api_token
    return token.get_secret_value() if token else None


# The decorated class is a bentoml Service at runtime; its stubs do not say so.
_service: Any = Advocacy
_service.add_asgi_middleware(FrameGuard)  # first, so that every answer of ours carries its headers
_service.add_asgi_middleware(RequestGate, hosts_from=lambda: get_settings().allowed_host_names())
_service.add_asgi_middleware(BodyLimit, limit_from=lambda: get_settings().max_request_bytes)
_service.add_asgi_middleware(BearerAuth, token_from=_configured_token)
_service.add_asgi_middleware(ScoreFastPath)
