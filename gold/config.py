"""Settings of the `gold` command (env prefix GOLD_, like the services it talks to)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import GoldSettings


class CliSettings(GoldSettings):
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the CLI presents to the orchestrator. Unset: the token `gold up` wrote "
        "to {data_dir}/api_token, if there is one.",
    )
    # The orchestrator can time out or restart under load; the run goes on either way.
    follow_patience_s: float = Field(
        default=600.0,
        ge=0.0,
        description="How long a followed run's status may stay unreadable before the CLI gives up on it, "
        "in seconds.",
    )
