from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TimerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHAKEL_TIMERS_", extra="ignore")

    interval_seconds: float = Field(
        default=30.0, gt=0, description="how often the clock is checked"
    )
