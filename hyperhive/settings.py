"""The one settings class: every knob of hyperhive, read from `HIVE_*` environment variables."""

from __future__ import annotations

import shutil
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hyperhive.models import DEFAULT_BUILD_TIMEOUT_S
from hyperhive.temporal_ids import host_task_queue

ContainerBackendName = Literal["auto", "nixos", "bwrap", "process"]

# AF_UNIX paths are limited to 108 bytes including the NUL; `/agents/<9 chars>/model.sock` is 28.
UNIX_SOCKET_PATH_MAX = 107
LONGEST_AGENT_SOCKET_SUFFIX = len("/agents/") + 9 + len("/model.sock")


class HiveSettings(BaseSettings):
    """Settings for hive-c0re and the `hive` CLI. Each field is `HIVE_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HIVE_", extra="ignore", frozen=True)

    state_dir: Path = Field(
        default=Path(".hive"),
        description="Persistent state: SQLite store, Temporal DB, config repos. "
        "The NixOS module sets /var/lib/hyperhive.",
    )
    run_dir: Path | None = Field(
        default=None,
        description="Sockets (host.sock, per-agent MCP sockets). Empty = <state_dir>/run; "
        "the NixOS module sets /run/hyperhive.",
    )
    host_id: str = Field(
        default="local",
        pattern=r"^[a-z0-9][a-z0-9-]{0,30}$",
        description="This host's id; host activities run on task queue hive-host-<host_id>.",
    )
    spawn_host: str = Field(
        default="",
        pattern=r"^$|^[a-z0-9][a-z0-9-]{0,30}$",
        description="Host id new agents are spawned on. Empty = the up host with the fewest "
        "agents.",
    )
    host_heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often this host records in the store that it is up."
    )
    host_down_after_s: float = Field(
        default=20.0,
        gt=0,
        description="A host not heard of for this long is shown as down (its agents wait).",
    )

    temporal_address: str = Field(
        default="",
        description="host:port of a Temporal cluster. Empty = start the embedded dev server.",
    )
    temporal_namespace: str = Field(default="default", description="Temporal namespace.")
    temporal_tls: bool = Field(
        default=False,
        description="Speak TLS to HIVE_TEMPORAL_ADDRESS, verifying the server against the "
        "system CAs unless HIVE_TEMPORAL_TLS_CA is set. Any other TLS setting or an API key "
        "turns TLS on too.",
    )
    temporal_tls_ca: Path | None = Field(
        default=None,
        description="PEM CA bundle the Temporal server's certificate is verified against, "
        "instead of the system CAs (a private cluster's CA).",
    )
    temporal_tls_cert: Path | None = Field(
        default=None,
        description="PEM client certificate for mTLS to Temporal; needs HIVE_TEMPORAL_TLS_KEY.",
    )
    temporal_tls_key: Path | None = Field(
        default=None,
        description="PEM private key of HIVE_TEMPORAL_TLS_CERT. Read at connect, never logged.",
    )
    temporal_tls_server_name: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9.-]*$",
        description="Name the Temporal server's certificate must carry (also sent as SNI), when "
        "it is not the host of HIVE_TEMPORAL_ADDRESS. Empty = that host.",
    )
    temporal_api_key: SecretStr | None = Field(
        default=None,
        description="API key for Temporal (e.g. Temporal Cloud), sent as a bearer token; turns "
        "TLS on. Prefer HIVE_TEMPORAL_API_KEY_FILE. Never printed.",
    )
    temporal_api_key_file: Path | None = Field(
        default=None,
        description="File holding the Temporal API key, read at connect (keeps the key out of "
        "the environment and the Nix store).",
    )
    temporal_bin: Path | None = Field(
        default=None,
        description="The `temporal` CLI for the embedded server. Empty = the one installed by "
        "the temporal-bin package next to this Python, else PATH.",
    )
    temporal_port: int = Field(default=7233, ge=1, le=65535, description="Embedded Temporal gRPC.")
    temporal_ui_port: int = Field(
        default=8233, ge=1, le=65535, description="Embedded Temporal Web UI."
    )
    temporal_ui_url: str = Field(
        default="",
        pattern=r"^(https?://\S+)?$",
        description="The Temporal Web UI's URL, for links from the dashboard, `hive` and "
        "approvals to workflow histories. Empty = the embedded server's UI; no links when "
        "HIVE_TEMPORAL_ADDRESS is set (the NixOS module sets it when its UI is on).",
    )

    db_url: str = Field(
        default="",
        description="SQLAlchemy URL of the store. Empty = SQLite (WAL) at <state_dir>/hive.db.",
    )

    bind_host: str = Field(
        default="127.0.0.1",
        description="Address the dashboard, agent pages and embedded Temporal bind to.",
    )
    allowed_hosts: str = Field(
        default="",
        description="More host names the dashboard and agent pages answer to, comma-separated "
        "(besides localhost, 127.0.0.1, ::1 and bind_host); any other Host header is refused.",
    )
    access_token_required: bool = Field(
        default=False,
        description="The dashboard and agent pages (all but /health and /static) ask for an "
        "access token: the link `hive urls` prints (a cookie then), or Authorization: Bearer "
        "<token>. The token is kept in <state_dir>/secrets/access-token and published for the "
        "admins in <run_dir>/access-token (0640, group HIVE_ADMIN_GROUP).",
    )
    admin_group: str = Field(
        default="",
        description="Group given the admin socket <run_dir>/host.sock (mode 0660), so its members "
        "can use `hive` without root. Empty = hive-c0re's own group.",
    )
    dashboard_port: int = Field(default=7000, ge=1, le=65535, description="Dashboard and API.")
    manager_port: int = Field(default=8000, ge=1, le=65535, description="hm1nd's agent page.")
    agent_port_min: int = Field(default=8100, ge=1, le=65535, description="First agent-page port.")
    agent_port_max: int = Field(default=8999, ge=1, le=65535, description="Last agent-page port.")

    container_backend: ContainerBackendName = Field(
        default="auto",
        description="nixos | bwrap | process | auto (nixos on NixOS, else bwrap if installed, "
        "else process).",
    )
    claude_bin: str = Field(default="claude", description="The claude CLI (path or name on PATH).")
    model: str = Field(default="", description="Default model for agents. Empty = CLI default.")

    model_base_url: str = Field(
        default="",
        description="The Anthropic Messages API agents use (e.g. a gateway or a local model "
        "server). Empty = ANTHROPIC_BASE_URL from HIVE_AGENT_EXTRA_ENV, else "
        "https://api.anthropic.com.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Host-wide Anthropic API key for every agent that has no login of its own "
        "(pasted on its page or `hive login`). Never printed.",
    )
    oauth_token: SecretStr | None = Field(
        default=None,
        description="Host-wide Claude OAuth token (`claude setup-token`) for every agent that has "
        "no login of its own; an API key (HIVE_API_KEY) wins over it. Never printed.",
    )
    permission_mode: Literal[
        "", "acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan"
    ] = Field(
        default="",
        description="Default claude --permission-mode of agents whose settings.json sets none. "
        "Empty = bypassPermissions in a sandbox (bwrap, nixos: the sandbox is the boundary), "
        "acceptEdits under the process backend (no sandbox: file edits in the work dir only). "
        "hive's MCP tools are always allowed.",
    )
    sandbox_uid: int = Field(
        default=990000,
        ge=1,
        le=2**32 - 2,
        description="When hive-c0re runs as root, the unprivileged host uid (and gid) bwrap "
        "sandboxes run as, in a user namespace where they look like root. Agents' data dirs "
        "are given to it.",
    )
    agent_extra_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment for every agent's claude, as JSON (e.g. "
        '{"ANTHROPIC_BASE_URL": "http://127.0.0.1:9999"}).',
    )

    max_body_bytes: int = Field(
        default=65536, ge=1, description="Largest message body (UTF-8 bytes)."
    )
    send_rate_per_minute: int = Field(
        default=120, ge=1, description="Messages one agent may send per minute (operator exempt)."
    )
    recv_max_wait_s: float = Field(
        default=120.0, ge=0, description="Longest recv(wait_seconds) long-poll."
    )
    turn_idle_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A turn whose claude prints nothing for this long is hung: killed, retried.",
    )
    turn_heartbeat_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A turn whose worker stops heartbeating this long (hive-c0re died) is "
        "retried elsewhere.",
    )
    turn_timeout_s: float = Field(
        default=3600.0, gt=0, description="Longest a single turn may run."
    )
    warm_agents: int = Field(
        default=8,
        ge=0,
        description="How many agents keep their claude running between turns (the least "
        "recently used goes cold first); a warm agent's next message reaches the model in "
        "milliseconds instead of seconds. 0 turns warm agents off: every turn starts claude.",
    )
    warm_idle_s: float = Field(
        default=600.0,
        gt=0,
        description="A warm agent without a turn for this long goes cold (its claude exits).",
    )
    max_turns_per_hour: int = Field(
        default=60,
        ge=1,
        description="Turn budget per agent per hour; crossing it pauses the agent.",
    )
    max_spend_usd_per_day: float = Field(
        default=20.0,
        gt=0,
        description="Spend budget per agent per UTC day (USD); crossing it pauses the agent.",
    )

    approval_expire_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="A pending approval expires after this long."
    )
    approval_remind_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="Remind the operator of a pending approval this often.",
    )
    max_mcp_sessions_per_agent: int = Field(
        default=32,
        ge=1,
        description="Open MCP sessions one agent's socket keeps at once (a turn's claude uses "
        "one); more are refused (503) until some close or idle out.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="An HTTP connection (dashboard, agent pages, MCP sockets, model proxies) must "
        "deliver a whole request, headers and body, within this long of starting one, or it is "
        "closed (slowloris, slow POST).",
    )
    max_live_streams: int = Field(
        default=32,
        ge=1,
        description="Live event streams (dashboard and agent pages, SSE) hive-c0re holds open "
        "at once; more are answered 503 until some close.",
    )
    max_live_streams_per_client: int = Field(
        default=12,
        ge=1,
        description="Live event streams one client address may hold open at once (a browser "
        "holds one per open dashboard or agent-page tab).",
    )
    max_pending_approvals_per_agent: int = Field(
        default=20,
        ge=1,
        description="An agent (hm1nd) may have at most this many approvals waiting at once; "
        "more requests are refused until the operator decides some.",
    )
    auto_update_interval_s: float = Field(
        default=3600.0, gt=0, description="How often the hive-auto-update schedule runs."
    )
    build_timeout_s: float = Field(
        default=DEFAULT_BUILD_TIMEOUT_S,
        ge=60,
        description="How long one container build (create, or update to a new config) may "
        "take before it is given up; a Nix build of a first system takes minutes.",
    )
    hyperhive_flake_url: str = Field(
        default="",
        description="The hyperhive flake agents' flakes are pinned to. Empty = this git "
        "checkout (the NixOS module sets path:<store path>).",
    )
    hyperhive_rev: str = Field(
        default="",
        description="This hyperhive's revision, recorded per agent. Empty = the checkout's git "
        "commit, else the package version.",
    )
    create_manager: bool = Field(
        default=True, description="Create hm1nd at start-up when it does not exist."
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of hive-c0re."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log format of hive-c0re: text for people, json for log shippers (one "
        "object per line).",
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> HiveSettings:
        if self.agent_port_min > self.agent_port_max:
            raise ValueError(
                f"HIVE_AGENT_PORT_MIN ({self.agent_port_min}) is above "
                f"HIVE_AGENT_PORT_MAX ({self.agent_port_max})"
            )
        if self.host_down_after_s <= self.host_heartbeat_s:
            raise ValueError(
                f"HIVE_HOST_DOWN_AFTER_S ({self.host_down_after_s}) must be above "
                f"HIVE_HOST_HEARTBEAT_S ({self.host_heartbeat_s}): a host would be shown down "
                "between two of its beats"
            )
        return self

    @field_validator(
        "temporal_tls_ca",
        "temporal_tls_cert",
        "temporal_tls_key",
        "temporal_api_key",
        "temporal_api_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `HIVE_TEMPORAL_TLS_CA=` would otherwise be Path("."), and an empty key a key.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_temporal_auth(self) -> HiveSettings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            given, missing = (
                ("HIVE_TEMPORAL_TLS_CERT", "HIVE_TEMPORAL_TLS_KEY")
                if self.temporal_tls_cert is not None
                else ("HIVE_TEMPORAL_TLS_KEY", "HIVE_TEMPORAL_TLS_CERT")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: mTLS needs the client certificate and "
                "its private key together"
            )
        if self.temporal_api_key is not None and self.temporal_api_key_file is not None:
            raise ValueError(
                "HIVE_TEMPORAL_API_KEY and HIVE_TEMPORAL_API_KEY_FILE are both set: keep one "
                "(the file keeps the key out of the environment)"
            )
        if self.embedded_temporal and (self.temporal_tls_enabled or self.temporal_api_key_set):
            raise ValueError(
                "Temporal TLS or API key settings are set without HIVE_TEMPORAL_ADDRESS: the "
                "embedded server speaks neither; set the cluster's address or unset them"
            )
        return self

    @property
    def temporal_api_key_set(self) -> bool:
        return self.temporal_api_key is not None or self.temporal_api_key_file is not None

    @property
    def temporal_tls_enabled(self) -> bool:
        """TLS to Temporal: asked for, implied by any TLS setting, or by an API key (a bearer
        token must not cross the network in clear; the Temporal SDK defaults to the same)."""
        return (
            self.temporal_tls
            or self.temporal_api_key_set
            or bool(self.temporal_tls_server_name)
            or any(
                p is not None
                for p in (self.temporal_tls_ca, self.temporal_tls_cert, self.temporal_tls_key)
            )
        )

    @cached_property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().absolute()

    @cached_property
    def run_path(self) -> Path:
        base = self.run_dir if self.run_dir is not None else self.state_path / "run"
        return base.expanduser().absolute()

    @cached_property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.state_path / 'hive.db'}"

    @property
    def embedded_temporal(self) -> bool:
        return not self.temporal_address

    @property
    def temporal_target(self) -> str:
        if self.temporal_address:
            return self.temporal_address
        return f"{self.bind_host}:{self.temporal_port}"

    @property
    def temporal_db_path(self) -> Path:
        return self.state_path / "temporal.db"

    @property
    def core_task_queue(self) -> str:
        return "hive-core"

    @property
    def host_task_queue(self) -> str:
        return host_task_queue(self.host_id)

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.allowed_hosts.split(",") if h.strip())

    @property
    def access_token_path(self) -> Path:
        """Where hive-c0re keeps the access token (its own copy, 0600)."""
        return self.state_path / "secrets" / "access-token"

    @property
    def published_access_token_path(self) -> Path:
        """The copy the admins (HIVE_ADMIN_GROUP) may read, for scripts and `curl`."""
        return self.run_path / "access-token"

    @property
    def host_socket_path(self) -> Path:
        return self.run_path / "host.sock"

    def agent_run_dir(self, agent: str) -> Path:
        """Holds the agent's MCP socket; bind-mounted at /run/hive in its container."""
        return self.run_path / "agents" / agent

    def agent_socket_path(self, agent: str) -> Path:
        return self.agent_run_dir(agent) / "mcp.sock"

    def agent_state_dir(self, agent: str) -> Path:
        """Per agent: home/ (HOME, with .claude = its credentials), work/ (its cwd)."""
        return self.state_path / "agents" / agent

    def temporal_cli(self) -> Path | None:
        """Where the `temporal` binary is, or None when it cannot be found."""
        if self.temporal_bin is not None:
            return self.temporal_bin if self.temporal_bin.exists() else None
        beside_python = Path(sys.executable).parent / "temporal"
        if beside_python.exists():
            return beside_python
        found = shutil.which("temporal")
        return Path(found) if found else None

    def dashboard_url(self) -> str:
        return f"http://{self.bind_host}:{self.dashboard_port}"

    def temporal_web_ui(self) -> str | None:
        """Where links to workflow histories point, or None when there is no Web UI to link."""
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        return (
            f"http://{self.bind_host}:{self.temporal_ui_port}" if self.embedded_temporal else None
        )
