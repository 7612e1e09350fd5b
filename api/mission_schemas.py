"""Request shape of ``POST /missions/trigger`` (AiMissionTriggerService)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MissionTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"pipeline": "deploy", "mission_id": "m-42", "a2a_task_id": "task-7",
         "callback_url": "https://agent.example.com/a2a/callback", "context": {"goal": "ship"}}]})

    pipeline_id: int | None = Field(None, description="the pipeline to run (or give `pipeline`)")
    pipeline: str | None = Field(None, min_length=1, max_length=200, description="the pipeline's name (or slug)")
    mission_id: str = Field(min_length=1, max_length=200, description="the external mission")
    a2a_task_id: str | None = Field(None, min_length=1, max_length=200, description="the linked external task")
    callback_url: str | None = Field(None, max_length=2000, description="http(s) URL told when the run finishes")
    callback_secret: str | None = Field(None, max_length=100, description="name of the account secret that signs it")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="visible to steps as ${{ trigger.mission.context.* }}; ≤ 64 KB")
    inputs: dict[str, Any] = Field(default_factory=dict, description="typed values for the pipeline's inputs")
