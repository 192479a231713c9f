"""Typed configuration: one `Settings` object, three profiles, YAML and env overrides.

Resolution order (later wins):
  1. the profile's defaults (`tiny`, `demo`, `large`);
  2. a YAML file (`growthgr --config FILE`), nested like `Settings`;
  3. environment variables: `GROWTHGR_PROFILE`, `GROWTHGR_LAKE_ROOT`,
     `GROWTHGR_RELEASES_ROOT`, `GROWTHGR_S3_ENDPOINT_URL`, and any nested key as
     `GROWTHGR_<SECTION>__<KEY>` (e.g. `GROWTHGR_SIMULATOR__N_USERS=500`);
  4. explicit overrides passed by code (tests, CLI flags).

Unknown keys and wrong types raise `ConfigError` naming the dotted key path.
Each subsystem owns its section class (in its own module) and registers its
per-profile overrides in `PROFILE_OVERRIDES` below.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from foundation.redact import MASK, is_secret_key, redact
from foundation.sections.abtest import PROFILES as ABTEST_PROFILES
from foundation.sections.abtest import ABTestConfig
from foundation.sections.dense import PROFILES as DENSE_PROFILES
from foundation.sections.dense import DenseConfig
from foundation.sections.feast import FeatureStoreConfig
from foundation.sections.gates import PROFILES as GATES_PROFILES
from foundation.sections.gates import GatesConfig
from foundation.sections.itemltv import PROFILES as ITEMLTV_PROFILES
from foundation.sections.itemltv import ItemLTVConfig
from foundation.sections.multigr import PROFILES as MULTIGR_PROFILES
from foundation.sections.multigr import MultiGRConfig
from foundation.sections.serve import PROFILES as SERVE_PROFILES
from foundation.sections.serve import ServeConfig
from foundation.sections.simulator import PROFILES as SIMULATOR_PROFILES
from foundation.sections.simulator import SimulatorConfig
from foundation.sections.tokenizer import PROFILES as TOKENIZER_PROFILES
from foundation.sections.tokenizer import TokenizerConfig
from foundation.sections.trainer import PROFILES as TRAINER_PROFILES
from foundation.sections.trainer import TrainerConfig
from foundation.sections.warehouse import WarehouseConfig
from foundation.strict import StrictModel

Profile = Literal["tiny", "demo", "study", "large"]
PROFILES: tuple[str, ...] = ("tiny", "demo", "study", "large")
ENV_PREFIX = "GROWTHGR_"


class SparkConfig(StrictModel):
    """How Spark runs (`spark_jobs.session.get_spark`): `local[*]` by default, any master URL
    (`spark://host:7077`, `yarn`, `k8s://...`) for a cluster, with no code change.

    S3 (`s3_connector`): pyspark ships no S3A connector, so by default (`auto`) the jobs read an
    `s3://` lake through the lake reader (`spark_jobs.lake_source`: pyarrow in the
    executors, endpoint and region from `storage`); `auto` switches to Hadoop's S3A connector
    (`s3a://` URLs) when its class loads in the driver (jars from `jars_packages` or the cluster
    image), configured by the `s3a_*` keys plus `storage.s3_endpoint_url`; `arrow` / `s3a` force
    one. Outputs are always written by the driver through the lake's commit protocol.
    """

    master: str = "local[*]"
    app_name: str = "growthgr"
    shuffle_partitions: int = Field(4, ge=1)
    driver_memory: str = "4g"
    backfill_days_per_job: int = Field(31, ge=1)   # days one range job builds (jobs with `run_range`)
    log_level: str = "WARN"
    driver_host: str | None = None          # e.g. 127.0.0.1 when a cluster must call back
    # Python of the Python workers (the lake reader runs there): None = this interpreter in
    # local mode, the cluster's own (PYSPARK_PYTHON) otherwise; it must import `growthgr`.
    python: str | None = None
    jars_packages: list[str] = Field(default_factory=list)  # e.g. org.apache.hadoop:hadoop-aws:3.4.2
    s3a_credentials_provider: str | None = None  # None: Hadoop's default chain (env, profile, IAM role)
    s3a_path_style_access: bool = True
    s3_connector: Literal["auto", "arrow", "s3a"] = "auto"
    # JVM options of the driver and the executors (spark.{driver,executor}.extraJavaOptions). The
    # tiny profile's: the client compiler only and the serial collector, for jobs of seconds on a
    # few rows, where the C2 compiler and the parallel GC threads cost more CPU than they save
    # (Spark test modules: about a third less CPU, measured on 2 cores).
    java_options: str = ""
    extra_conf: dict[str, str] = Field(default_factory=dict)


class StorageConfig(StrictModel):
    """S3 connection settings, used when a root is an `s3://bucket/prefix` URI.

    Credentials are never configured here: boto3 and pyarrow take them from AWS's default chain
    (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, shared config files, instance or pod roles).
    `state_dir`: local directory for the single-writer state of the lake (dbt's DuckDB file,
    Feast's registry and SQLite online store); default the lake root for a local lake,
    `.growthgr-state/<bucket>/<prefix>` under the working directory for an `s3://` lake.
    """

    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    state_dir: str | None = None


class AlertsConfig(StrictModel):
    """Where the DAGs' alerts go (`growthgr.alerts`): a task failed after its last retry, a run
    past its deadline. Both sinks are optional and off by default: with neither, nothing is sent."""

    smtp_host: str | None = None                     # the mail relay; None: no e-mail
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = False                      # STARTTLS before the login (e.g. port 587)
    smtp_user: str | None = None                     # login user; None: no login
    smtp_password: str | None = None                 # with smtp_user (from the env; never logged)
    smtp_from: str = "growthgr@localhost"            # the sender address
    smtp_to: list[str] = Field(default_factory=list)  # recipients: at least one with smtp_host
    webhook_url: str | None = None                   # an HTTP(S) endpoint that gets one JSON POST per alert
    timeout_s: float = Field(10.0, gt=0)             # per sink: connecting and sending, then the alert is lost

    @model_validator(mode="after")
    def _recipients(self) -> AlertsConfig:
        if self.smtp_host and not self.smtp_to:
            raise ValueError("alerts.smtp_host needs at least one address in alerts.smtp_to")
        return self


class LineageConfig(StrictModel):
    """Where the OpenLineage events of the DAG tasks (Airflow's OpenLineage provider) and of dbt's
    models go (`growthgr.lineage`): a JSON-lines file by default, an HTTP endpoint (e.g. Marquez),
    or nowhere."""

    transport: Literal["file", "http", "off"] = "file"
    # the events file; None: `<Airflow home>/lineage/openlineage.jsonl` (AIRFLOW_HOME, else `.airflow`)
    file: str | None = None
    url: str | None = None                           # with transport "http": the endpoint's base URL
    namespace: str = "growthgr"                      # the jobs' namespace
    timeout_s: float = Field(5.0, gt=0)              # per HTTP event, then the event is lost (never the task)

    @model_validator(mode="after")
    def _url(self) -> LineageConfig:
        if self.transport == "http" and not self.url:
            raise ValueError("lineage.transport http needs lineage.url")
        return self


class OrchestrationConfig(StrictModel):
    """Airflow task defaults of the daily DAG (production: retries >= 1), step timeouts, the
    run deadline, the alert sinks and where lineage goes."""

    retries: int = Field(2, ge=0)
    retry_delay_minutes: float = Field(5.0, ge=0)
    timeout_scale: float = Field(1.0, gt=0)           # multiplies every step's `timeout_minutes` (registry)
    step_timeout_minutes: dict[str, float] = Field(default_factory=dict)  # step name -> minutes, unscaled
    # a run not successful this long after it was queued sends a deadline alert; None: no deadline
    deadline_minutes: float | None = Field(360.0, gt=0)
    # the daily run of day D starts when D's raw logs arrive (the raw Asset) or at this UTC time of
    # D+1, whichever comes first; its intervals run from this time to this time
    raw_deadline_utc: str = Field("06:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    lineage: LineageConfig = Field(default_factory=LineageConfig)


class Settings(StrictModel):
    """The effective configuration of one GrowthGR process."""

    profile: Profile = "demo"
    seed: int = 7
    lake_root: str = "lake"
    releases_root: str = "releases"
    storage: StorageConfig = Field(default_factory=StorageConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    feast: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    itemltv: ItemLTVConfig = Field(default_factory=ItemLTVConfig)
    multigr: MultiGRConfig = Field(default_factory=MultiGRConfig)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    abtest: ABTestConfig = Field(default_factory=ABTestConfig)
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)

    def gates_config(self) -> GatesConfig:
        """The gates section with the bounds that follow other sections filled in: the SID
        table's codebook size and collision bound (tokenizer), the pool's size (ItemLTV)."""
        return self.gates.model_copy(update={
            "sid_codebook_size": self.tokenizer.codebook_size,
            "sid_max_collision_rate": self.tokenizer.max_collision_rate,
            "pool_max_size": self.itemltv.pool_size,
        })

    def digest(self) -> str:
        """A short stable hash of the effective config (goes into release manifests)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_SPARK_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"shuffle_partitions": 2, "driver_memory": "2g",
             "java_options": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"},
    "demo": {},
    "large": {"shuffle_partitions": 16, "driver_memory": "8g"},
}

# Per-profile overrides of the section defaults, as nested dicts. Each
# subsystem keeps its own `PROFILES` next to its section class.
_SECTION_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "spark": _SPARK_PROFILES,
    "orchestration": {"tiny": {"retries": 0, "retry_delay_minutes": 0.0, "timeout_scale": 0.5},
                      "large": {"timeout_scale": 4.0}},
    "gates": GATES_PROFILES,
    "simulator": SIMULATOR_PROFILES,
    "tokenizer": TOKENIZER_PROFILES,
    "itemltv": ITEMLTV_PROFILES,
    "multigr": MULTIGR_PROFILES,
    "dense": DENSE_PROFILES,
    "serve": SERVE_PROFILES,
    "trainer": TRAINER_PROFILES,
    "abtest": ABTEST_PROFILES,
}
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    name: {section: profiles.get(name, {}) for section, profiles in _SECTION_PROFILES.items()}
    for name in PROFILES
}

_TOP_LEVEL_ENV = {
    "LAKE_ROOT": ("lake_root",),
    "RELEASES_ROOT": ("releases_root",),
    "S3_ENDPOINT_URL": ("storage", "s3_endpoint_url"),
    "SEED": ("seed",),
}


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the key."""


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `update` into a copy of `base` (dicts merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Nested overrides from `GROWTHGR_*` variables (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in (ENV_PREFIX + "PROFILE", ENV_PREFIX + "CONFIG"):
            continue
        key = name[len(ENV_PREFIX):]
        path = _TOP_LEVEL_ENV.get(key) or tuple(part.lower() for part in key.split("__"))
        value = raw if path[-1].endswith(("root", "url", "dir")) else yaml.safe_load(raw)
        _set_path(out, path, value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; its top level must be a mapping."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{key}'")
        else:
            got = MASK if is_secret_key(key) else redact(repr(e.get("input")))
            lines.append(f"config key '{key}': {e['msg']} (got {got})")
    return "; ".join(lines)


def load_settings(
    profile: str | None = None,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective `Settings` (see the module docstring for the order)."""
    env = os.environ if env is None else env
    file_data = read_yaml(config_file) if config_file else {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file and not file_data:
        file_data = read_yaml(config_file)
    chosen = (
        profile
        or (overrides or {}).get("profile")
        or env.get(ENV_PREFIX + "PROFILE")
        or file_data.get("profile")
        or "demo"
    )
    if chosen not in PROFILES:
        raise ConfigError(f"config key 'profile': unknown profile {chosen!r}, expected one of {PROFILES}")
    merged = deep_merge(PROFILE_OVERRIDES.get(chosen, {}), file_data)
    merged = deep_merge(merged, env_overrides(env))
    merged = deep_merge(merged, overrides or {})
    merged["profile"] = chosen
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
