"""The first content of a new agent's config repo, from the template files beside this module.

`hyperhive/templates/agent_config/`: agent.nix (the container's NixOS module), CLAUDE.agent.md or
CLAUDE.manager.md (its role, with the spawn purpose), settings.json (Claude Code's settings).
"""

from __future__ import annotations

from importlib import resources
from string import Template

from hyperhive.agent_config import INSTRUCTIONS_FILE, SETTINGS_FILE
from hyperhive.domain import MANAGER_NAME

AGENT_NIX_FILE = "agent.nix"


def _template(name: str) -> Template:
    text = resources.files("hyperhive").joinpath("templates", "agent_config", name).read_text()
    return Template(text)


def initial_agent_nix(agent: str) -> str:
    return _template("agent.nix").substitute(agent=agent)


def initial_claude_md(agent: str, purpose: str) -> str:
    name = "CLAUDE.manager.md" if agent == MANAGER_NAME else "CLAUDE.agent.md"
    purpose = purpose.strip() or "(no purpose was given)"
    return _template(name).substitute(agent=agent, purpose=purpose)


def initial_settings_json() -> str:
    return _template("settings.json").template


def initial_config(agent: str, purpose: str) -> dict[str, str]:
    """Every config file of a new agent, by name."""
    return {
        AGENT_NIX_FILE: initial_agent_nix(agent),
        INSTRUCTIONS_FILE: initial_claude_md(agent, purpose),
        SETTINGS_FILE: initial_settings_json(),
    }
