"""One settings object for the whole project, read from `ADVOCACY_*` environment variables.

Nothing happens at import: call `get_settings()` where a setting is needed. Paths default to
folders under the project directory (the current working directory, or `ADVOCACY_HOME`), so
a fresh clone works with no configuration at all.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _project_home() -> Path:
    return Path(os.environ.get("ADVOCACY_HOME", Path.cwd())).resolve()


class Settings(BaseSettings):
    """Runtime settings; every field can be set as `ADVOCACY_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="ADVOCACY_", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=_project_home)
    data_dir: Path | None = None
    # ADVOCACY_MLFLOW_TRACKING_URI, else MLflow's own MLFLOW_TRACKING_URI, read once at start-up
    # (MLflow itself writes that variable whenever a URI is set, so it is not re-read later).
    mlflow_tracking_uri: str | None = Field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI"))
    experiment: str = "advocacy"
    model_name: str = "advocacy-propensity"
    feature_store: Path | None = None
    ask_log: Path | None = None
    api_token: SecretStr | None = None
    # The service looks this often for a moved @champion or a newer feature snapshot and swaps them in.
    reload_seconds: float = Field(default=30.0, gt=0)
    # Worker processes of the service, each with its own copy of the model and snapshot (about 0.7 GB
    # on the sample data). One per core serves the most; they share the ask log through SQLite.
    workers: int = Field(default=1, ge=1, le=64)
    # Host names the service answers to besides this machine's own (localhost, 127.0.0.1, ::1),
    # comma-separated: the names clients use to reach it behind a proxy or in a cluster. A request
    # with any other Host header is refused (DNS rebinding); "*" answers every name.
    allowed_hosts: str = ""
    # Largest request body the service reads; bigger ones get 413 before any of it is parsed.
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Seconds a connection may take to send a request's line and headers (on opening, and after each
    # answer on a kept-alive connection); one that takes longer is closed (`serving.patches`).
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # A new feature snapshot with fewer active customers than this share of the served one is refused
    # (by `advocacy score`, unless --force-snapshot, and by the service), and so is one with none.
    min_snapshot_share: float = Field(default=0.5, ge=0, le=1)
    # Promotion gate (training.gate): the held-out AUC gain over the points rule and over the champion
    # must have a paired, customer-resampled bootstrap interval above zero at this confidence, and the
    # held-out propensity ECE must be at most the ceiling.
    gate_confidence: float = Field(default=0.95, gt=0, lt=1)
    gate_resamples: int = Field(default=400, ge=50)
    gate_max_ece: float = Field(default=0.05, gt=0, le=1)
    # `advocacy recalibrate` may reorder asks across types (per-type offsets): it is refused when the
    # acceptance or propensity AUC falls by more than this beyond noise.
    gate_max_auc_loss: float = Field(default=0.01, ge=0, le=1)
    # How far (log-odds) the company's own habits of whom to ask may lift the acceptance of the asks
    # they chose, beyond what the features see. `advocacy recalibrate` weighs each campaign answer
    # (spec 5a: asked because a plan chose it) above those asks by what this bias costs them
    # (`models.calibration.campaign_weights`); 0 weighs every answer alike. 0.25 is the lift the
    # generated world's unrecorded rapport gives the asks its company chooses (0.6 log-odds of
    # acceptance per sd of rapport, asked 2 x sigmoid(1.2 x rapport) as often: 0.25 at rates of
    # 0.2 to 0.5); a real company's habits may weigh more.
    habit_bias: float = Field(default=0.25, ge=0, le=5)
    # An accepted ask not delivered (no activity names its ask_id) within this many days is no longer
    # committed pipeline. Fixed at training time and kept with the model, so API and batch agree.
    commitment_lapse_days: int = Field(default=90, ge=1, le=3650)
    # Ask types invited without gating, comma-separated (spec 5a): whom to invite is drawn at random
    # among customers no fatigue guardrail blocks, with no health or ticket rule, and the type is never
    # a customer's next best ask. Public reviews by default: asking only the customers expected to be
    # happy is what the FTC's guide on soliciting reviews tells businesses not to do. Empty: none.
    ungated_types: str = "review"
    # The plan the CSM page opens on (yeses needed per ask type, `TYPE=N,TYPE=N`), until a CSM edits it.
    worklist_need: str = "reference_call=10,review=30,case_study=3"
    # Stored plans (`POST /plan`, `advocacy plan`) last written more than this many days ago are deleted
    # whenever a plan is stored, except a plan that an ask in the ask log names: the program report sets
    # those asks against their plan's promise for as long as the asks are kept. 0 keeps every plan.
    plan_keep_days: int = Field(default=365, ge=0, le=36500)
    # The program report's deals section (spec 9): what the advocacy program cost over the period the
    # report covers, in the deals' currency; its return is the incremental won revenue against it.
    # Unset: the report gives no return and says so.
    program_cost: float | None = Field(default=None, gt=0)
    # The adjusted effect's bootstrap refits the whole estimator per resample, and each DoWhy
    # refutation simulation refits it again: these set the report's cost (`models.deal_effect`).
    deal_resamples: int = Field(default=100, ge=2, le=10_000)
    deal_refutation_simulations: int = Field(default=10, ge=0, le=1_000)
    # The CRM the service writes the profiles of customers whose asks it records to (`hubspot` or
    # `salesforce`, as `advocacy sync` does), within this many seconds of the ask; unset: the service
    # writes nothing to a CRM.
    sync_target: str | None = None
    sync_seconds: float = Field(default=60.0, gt=0, le=3600)
    # HubSpot: a private app's access token (from the environment, never the repo), the API's base URL,
    # and the object type ids (e.g. `2-1234567`) of the Advocate Profile and Advocacy Activity custom
    # objects. Property names that differ from ours: `ours=theirs,ours=theirs`.
    hubspot_token: SecretStr | None = None
    hubspot_url: str = "https://api.hubapi.com"
    hubspot_profile_object: str | None = None
    hubspot_activity_object: str | None = None
    hubspot_fields: str = ""
    # Salesforce: an OAuth access token (from the environment), the org's instance URL, the custom
    # objects, and field API names that differ from ours (`Customer_Id__c` style): `ours=theirs,...`.
    salesforce_token: SecretStr | None = None
    salesforce_url: str | None = None
    salesforce_profile_object: str = "Advocate_Profile__c"
    salesforce_activity_object: str = "Advocacy_Activity__c"
    salesforce_fields: str = ""

    def ungated_type_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.strip() for name in self.ungated_types.split(",") if name.strip()))

    def allowed_host_names(self) -> frozenset[str]:
        return frozenset(name.strip().lower() for name in self.allowed_hosts.split(",") if name.strip())

    def resolved_data_dir(self) -> Path:
        return (self.data_dir or self.home / "data" / "sample").resolve()

    def state_dir(self) -> Path:
        """Where local stores live (MLflow, feature snapshot, ask log); ignored by git."""
        return self.home / ".advocacy"

    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.state_dir() / 'mlflow.db').resolve()}"

    def artifact_root(self) -> Path:
        return self.state_dir() / "mlartifacts"

    def feature_store_path(self) -> Path:
        return self.feature_store or self.state_dir() / "feature_store"

    def ask_log_path(self) -> Path:
        return self.ask_log or self.state_dir() / "asks.sqlite"

    def plans_path(self) -> Path:
        return self.state_dir() / "plans"

    def report_path(self) -> Path:
        """Where `advocacy report` keeps the latest program report for the CSM page."""
        return self.state_dir() / "report"


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str) -> str:
    """`text` with the `user:password@` of any URL in it replaced by `***@`, for logs and messages."""
    return _CREDENTIALS.sub("***@", text)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
