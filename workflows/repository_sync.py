"""RepositorySyncWorkflow and RepositoryWebhookWorkflow: short workflows the API runs and awaits.

``repository-sync-<credential_id>`` upserts the repositories one credential can see; a second
request while one runs joins it instead of starting another. ``repository-webhook-<repository_id>``
creates/repairs or deletes our webhook on one repository. Both exist so that a provider's rate
limit or outage is retried by Temporal (with the provider's ``Retry-After`` when it gave one),
while permanent failures (a refused token, a repository that is gone, an archived repository)
fail at once with the activity's message.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.repositories import (
        REPOSITORY_ARCHIVED,
        WEBHOOK_URL_UNKNOWN,
        RepositoryActivities,
        RepositoryWebhookInput,
        RepositoryWebhookResult,
        SyncRepositoriesInput,
        SyncRepositoriesResult,
    )

#: Failures no retry can fix (the activity marks them non-retryable too; this is the backstop).
PERMANENT_ERRORS = ["AuthError", "NotFound", "Conflict", "UnsupportedOperation", "ProviderError",
                    REPOSITORY_ARCHIVED, WEBHOOK_URL_UNKNOWN]
PROVIDER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60),
                             maximum_attempts=8, non_retryable_error_types=PERMANENT_ERRORS)
CALL_TIMEOUT = timedelta(minutes=2)  # one listing of every repository, or one hook call
GIVE_UP_AFTER = timedelta(minutes=15)


def sync_workflow_id(credential_id: int) -> str:
    return f"repository-sync-{credential_id}"


def webhook_workflow_id(repository_id: int) -> str:
    return f"repository-webhook-{repository_id}"


@dataclass
class RepositorySyncInput:
    account_id: int
    credential_id: int


@dataclass
class RepositoryWebhookChange:
    account_id: int
    repository_id: int
    action: Literal["configure", "delete"] = "configure"


@workflow.defn
class RepositorySyncWorkflow:
    @workflow.run
    async def run(self, inp: RepositorySyncInput) -> SyncRepositoriesResult:
        return await workflow.execute_activity_method(
            RepositoryActivities.sync_repositories,
            SyncRepositoriesInput(account_id=inp.account_id, credential_id=inp.credential_id),
            start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=GIVE_UP_AFTER,
            retry_policy=PROVIDER_RETRY,
        )


@workflow.defn
class RepositoryWebhookWorkflow:
    @workflow.run
    async def run(self, inp: RepositoryWebhookChange) -> RepositoryWebhookResult:
        activity_input = RepositoryWebhookInput(account_id=inp.account_id, repository_id=inp.repository_id)
        method = (RepositoryActivities.delete_webhook if inp.action == "delete"
                  else RepositoryActivities.configure_webhook)
        return await workflow.execute_activity_method(
            method,
            activity_input,
            start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=GIVE_UP_AFTER,
            retry_policy=PROVIDER_RETRY,
        )
