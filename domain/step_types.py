"""The seed's step types, and which of them this build can execute.

Documents may use every seed type; a type whose handler is not available yet fails its step
with a clear message instead of being refused at save time, so pipelines written for later
releases import today.
"""

STEP_TYPES: tuple[str, ...] = (
    "checkout",
    "claude_execute",
    "post_comment",
    "create_pr",
    "create_branch",
    "upload_artifact",
    "download_artifact",
    "run_tests",
    "deploy",
    "notify",
    "code_factory_gate",
    "custom",
)

# Step types with a handler in activities.steps / activities.git_steps; the others answer
# "not available yet".
AVAILABLE_STEP_TYPES: frozenset[str] = frozenset({"checkout", "run_tests", "notify", "custom", "code_factory_gate",
                                                  "create_branch", "create_pr", "post_comment", "upload_artifact",
                                                  "download_artifact", "deploy"})

TRIGGER_TYPES: tuple[str, ...] = (
    "manual",
    "pull_request",
    "issue",
    "issue_comment",
    "push",
    "release",
    "schedule",
    "webhook",
    "workflow_dispatch",
)

RUN_STATUSES = ("pending", "queued", "running", "success", "failure", "cancelled")
FINISHED_RUN_STATUSES = frozenset({"success", "failure", "cancelled"})
STEP_STATUSES = ("pending", "running", "success", "failure", "skipped", "cancelled", "waiting_approval")
