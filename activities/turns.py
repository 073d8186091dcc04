"""The turn: claim one inbox message, run the agent's claude on it, record every event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.backends import ContainerBackend
from activities.backends.mounts import CONFIG_SUBDIR
from activities.claude_command import (
    HIVE_SERVER,
    claude_argv,
    claude_env,
    git_identity_env,
    hive_mcp_config,
    session_exists,
    session_file,
)
from activities.heartbeat import beat_interval, heartbeat_every
from activities.wake_prompt import wake_prompt
from activities.warm_claude import WarmClaude, WarmPool, fingerprint
from hyperhive import config_repo
from hyperhive.agent_config import (
    INSTRUCTIONS_FILE,
    SETTINGS_FILE,
    AppliedClaudeFiles,
    ClaudeConfig,
    ClaudeDefaults,
    ClaudeSettingsError,
    effective_config,
    parse_claude_settings,
    write_turn_config,
)
from hyperhive.broker import agent_events_topic
from hyperhive.bus import Bus
from hyperhive.claude_stream.events import ResultEvent, parse_line
from hyperhive.claude_stream.outcome import TurnAccumulator, init_server_status
from hyperhive.credentials import turn_credentials
from hyperhive.domain import MANAGER_NAME, AgentState, TurnErrorClass
from hyperhive.models import Message, TurnRequest, TurnResult
from hyperhive.private_files import private_dir
from hyperhive.repo_git import RepoError
from hyperhive.settings import HiveSettings
from hyperhive.store import agents as agent_store
from hyperhive.store import messages as message_store
from hyperhive.store.off_loop import StoreCalls
from hyperhive.turn_sends import TurnSends

if TYPE_CHECKING:
    from hyperhive.metrics import HiveMetrics

log = logging.getLogger(__name__)

# Events of one attempt are numbered attempt * SEQ_STRIDE + n, so a retried turn's events are
# stored beside the first attempt's instead of being dropped as duplicates.
SEQ_STRIDE = 100_000

# Only these reach an agent's claude from hive-c0re's own environment.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")


class TurnActivities:
    def __init__(
        self,
        settings: HiveSettings,
        engine: Engine,
        bus: Bus,
        backend: ContainerBackend,
        *,
        metrics: HiveMetrics | None = None,
        warm: WarmPool | None = None,
        turn_sends: TurnSends | None = None,
    ) -> None:
        self._settings = settings
        self._db = StoreCalls(engine)
        self._bus = bus
        self._backend = backend
        self._metrics = metrics
        self._warm = warm or WarmPool(0, 0)
        self._turn_sends = turn_sends or TurnSends()

    @activity.defn(name="release_turn_message")
    async def release_turn_message(self, turn_id: str) -> bool:
        released: bool = await self._db(message_store.release_turn_message, turn_id)
        return released

    @activity.defn(name="run_turn")
    async def run_turn(self, request: TurnRequest) -> TurnResult:
        agent = request.agent
        message: Message | None = await self._db(
            message_store.claim_for_turn, agent, request.turn_id
        )
        if message is None:
            await self._db(agent_store.set_agent_state, agent, AgentState.IDLE)
            return TurnResult(turn_id=request.turn_id, no_message=True)
        await self._db(agent_store.set_agent_state, agent, AgentState.RUNNING)
        pending: int = await self._db(message_store.pending_count, agent)
        is_manager = agent == MANAGER_NAME
        prompt = wake_prompt(
            agent,
            message.sender,
            message.body,
            pending,
            is_manager=is_manager,
            repos_dir=self._backend.view(agent).repos if is_manager else None,
        )
        started = time.monotonic()
        self._turn_sends.begin(agent, request.turn_id)
        try:
            claude, warm = await self._claude_for(request)
            self._warm.running(claude, warm=warm)
            try:
                await claude.start_turn(prompt, last=not self._warm.enabled)
                result = await self._follow(request, message, claude, warm=warm)
            except BaseException:
                # A crash, hang, timeout or cancel: this claude is done for (its retry starts
                # a fresh one that resumes the session), and gone before the retry starts.
                claude.kill()
                self._warm.done(claude, keep=False)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(claude.process.wait())
                raise
            await self._warm.finish(claude, keep=result.error_class == TurnErrorClass.NONE.value)
        except ApplicationError as err:
            # Counted under its error type, then retried by Temporal.
            if self._metrics is not None:
                outcome = (err.type or "failed").lower()
                self._metrics.turn_finished(agent, outcome, time.monotonic() - started)
            raise
        finally:
            self._turn_sends.end(agent, request.turn_id)
        if self._metrics is not None:
            self._metrics.turn_finished(agent, result.error_class, time.monotonic() - started)
        await self._db(agent_store.set_agent_state, agent, AgentState.IDLE)
        return result

    def claude_defaults(self) -> ClaudeDefaults:
        return ClaudeDefaults(
            model=self._settings.model,
            permission_mode=self._settings.permission_mode,
            sandboxed=self._backend.sandboxed,
        )

    def _turn_config(self, agent: str) -> tuple[ClaudeConfig, AppliedClaudeFiles]:
        """The agent's applied CLAUDE.md and settings.json, written where its claude reads them
        (its config dir), and what they make of the host's defaults."""
        state = self._settings.state_path
        try:
            files = config_repo.applied_claude_files(state, agent)
            settings = parse_claude_settings(files.settings)
        except (RepoError, ClaudeSettingsError) as exc:
            raise ApplicationError(
                f"{agent}'s applied config cannot be used: {exc}",
                type="BadAgentConfig",
                non_retryable=True,
            ) from exc
        write_turn_config(
            self._settings.agent_state_dir(agent) / CONFIG_SUBDIR,
            {INSTRUCTIONS_FILE: files.instructions, SETTINGS_FILE: files.settings or b"{}"},
        )
        return effective_config(settings, self.claude_defaults()), files

    async def _claude_for(self, request: TurnRequest) -> tuple[WarmClaude, bool]:
        """The agent's warm claude if one was started exactly as this turn would start it (and
        True), else a fresh one (and False)."""
        agent = request.agent
        settings = self._settings
        view = self._backend.view(agent)
        host_home = settings.agent_state_dir(agent) / "home"
        host_work = settings.agent_state_dir(agent) / "work"
        for path in (host_home, host_work):
            private_dir(path)
        config, files = await asyncio.to_thread(self._turn_config, agent)
        bridge = self._backend.hive_agent_command()

        def argv(resume: bool) -> list[str]:
            return claude_argv(
                settings.claude_bin,
                session_id=request.session_id,
                resume=resume,
                mcp_config=hive_mcp_config(
                    command=bridge[0],
                    args=(*bridge[1:], "mcp"),
                    env={"HIVE_MCP_SOCKET": view.mcp_socket, "HIVE_AGENT": agent},
                ),
                model=config.model,
                permission_mode=config.permission_mode,
                append_system_prompt_file=str(PurePosixPath(view.config) / INSTRUCTIONS_FILE),
                settings_file=str(PurePosixPath(view.config) / SETTINGS_FILE),
                add_dirs=(view.repos,) if agent == MANAGER_NAME else (),
                stream_input=True,
            )

        base = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
        # The agent's own login beats the host-wide one (HIVE_API_KEY, HIVE_OAUTH_TOKEN), which
        # beats what HIVE_AGENT_EXTRA_ENV carries.
        credentials = turn_credentials(host_home / ".claude", settings)
        extra = {k: v for k, v in settings.agent_extra_env.items() if k not in credentials.drop}
        if settings.model_base_url:
            extra["ANTHROPIC_BASE_URL"] = settings.model_base_url
        env = claude_env(
            base,
            home=view.home,
            extra={**git_identity_env(agent), **extra, **credentials.env},
            sandboxed=self._backend.sandboxed,
        )
        # A session resumed or created, the same claude either way.
        wanted = fingerprint(
            argv(resume=True),
            env,
            (files.instructions, files.settings or b"", files.agent_nix),
        )
        warm = self._warm.take(agent, wanted)
        if warm is not None:
            return warm, True
        resume = session_exists(host_home, Path(view.work), request.session_id)
        try:
            process = await self._backend.exec(
                agent, argv(resume), env=env, stdin=b"", host_cwd=host_work, keep_stdin=True
            )
        except FileNotFoundError as exc:
            raise ApplicationError(
                f"cannot start claude ({settings.claude_bin}): {exc}. Install Claude Code or set "
                "HIVE_CLAUDE_BIN to its path.",
                type="ClaudeMissing",
            ) from exc
        return WarmClaude(agent, process, wanted), False

    async def _follow(
        self, request: TurnRequest, message: Message, claude: WarmClaude, *, warm: bool
    ) -> TurnResult:
        """Read claude's stream to the turn's `result` (or its exit): persist, publish and
        heartbeat every event."""
        settings = self._settings
        info = activity.info()
        seq = info.attempt * SEQ_STRIDE
        # The message the turn works on, first in its stream: the agent page shows what the
        # reply answers. (seq = attempt * SEQ_STRIDE is free: claude's events start at + 1.)
        await self._record_event(
            request,
            seq,
            "hive",
            {
                "text": f"← #{message.id} from {message.sender}: {_clip(message.body)}",
                "message_id": message.id,
                "from": message.sender,
                "warm": warm,
            },
        )
        await self._db(agent_store.touch_activity, request.agent)
        accumulator = TurnAccumulator()
        # Keeps the turn alive (and lets cancellation reach it) while claude thinks silently;
        # a hung claude is caught by the idle timeout instead.
        beat = asyncio.create_task(heartbeat_every(beat_interval()))
        try:
            async with asyncio.timeout(settings.turn_timeout_s):
                while True:
                    try:
                        raw = await asyncio.wait_for(
                            claude.readline(), settings.turn_idle_timeout_s
                        )
                    except TimeoutError:
                        raise ApplicationError(
                            f"claude printed nothing for {settings.turn_idle_timeout_s:.0f} s: "
                            "killed as hung; the turn is retried with the same session",
                            type="TurnHung",
                        ) from None
                    if not raw:
                        break
                    event = parse_line(raw.decode(errors="replace"))
                    if isinstance(event, ResultEvent):
                        event = claude.with_turn_cost(event)
                    accumulator.feed(event)
                    seq += 1
                    await self._record_event(request, seq, event.type, event.raw)
                    activity.heartbeat(seq)
                    hive = init_server_status(event, HIVE_SERVER)
                    if hive is not None and hive != "connected":
                        # Without its hive tools the agent could not answer: stop before the
                        # model acts, keep the message, and let Temporal run the turn again.
                        raise ApplicationError(
                            f"claude started without the hive tools (MCP server {HIVE_SERVER!r} "
                            f"{hive}); the turn is retried with the same message",
                            type="HiveToolsMissing",
                        )
                    if event.type == "result":
                        break  # the turn is over; a warm claude waits for the next one
        except TimeoutError:
            raise ApplicationError(
                f"the turn ran longer than {settings.turn_timeout_s:.0f} s (HIVE_TURN_TIMEOUT_S)",
                type="TurnTimeout",
            ) from None
        finally:
            beat.cancel()
        outcome = accumulator.outcome(now=time.time())
        error_class = outcome.error_class
        if outcome.session_missing:
            # The session file is there but claude cannot resume it (e.g. empty after a kill):
            # drop it so the retry starts the session afresh with --session-id.
            session_file(
                self._settings.agent_state_dir(request.agent) / "home",
                Path(self._backend.view(request.agent).work),
                request.session_id,
            ).unlink(missing_ok=True)
            raise ApplicationError(
                f"claude could not resume session {request.session_id}: {outcome.error_message}",
                type="SessionMissing",
            )
        if error_class is TurnErrorClass.CRASHED:
            returncode = await claude.wait_exit()
            tail = claude.stderr_tail()
            raise ApplicationError(
                f"claude exited with code {returncode} without a result: {tail or 'no stderr'}",
                type="TurnCrashed",
            )
        result = TurnResult(
            turn_id=request.turn_id,
            message_id=message.id,
            session_id=outcome.session_id or request.session_id,
            error_class=error_class.value,
            error_message=outcome.error_message,
            retry_after_s=outcome.retry_after_s,
            cost_usd=outcome.cost_usd,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            duration_ms=outcome.duration_ms or 0,
        )
        await self._db(
            agent_store.record_turn,
            agent=request.agent,
            message_id=message.id,
            session_id=result.session_id,
            duration_ms=outcome.duration_ms or 0,
            cost_usd=result.cost_usd,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cache_read_tokens=outcome.cache_read_input_tokens,
            cache_creation_tokens=outcome.cache_creation_input_tokens,
            error_class=error_class,
            error_message=outcome.error_message,
        )
        if result.cost_usd:
            await self._db(agent_store.add_spend, request.agent, result.cost_usd)
        return result

    async def _record_event(
        self, request: TurnRequest, seq: int, kind: str, payload: dict[str, Any]
    ) -> None:
        await self._db(
            agent_store.append_turn_events,
            request.agent,
            request.turn_id,
            [(seq, kind, payload)],
        )
        self._bus.publish(
            agent_events_topic(request.agent),
            {"turn_id": request.turn_id, "seq": seq, "kind": kind, "event": payload},
        )


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
