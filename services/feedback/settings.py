from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeedbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHAKEL_FEEDBACK_", extra="ignore")

    max_records: int = Field(default=500, ge=1, description="records per polled batch")
