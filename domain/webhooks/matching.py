"""Does a pipeline's ``triggers`` section want this event? Pure functions, GitHub Actions semantics.

Filter patterns (branches, tags, paths), as GitHub Actions documents them:

- ``*`` matches any characters except ``/``; ``**`` matches any characters including ``/``
  (``**/`` also matches nothing, so ``**/docs/**`` matches ``docs/a.md``);
- ``?`` makes the preceding character optional, ``+`` repeats it one or more times;
- ``[...]`` is a character class; ``\\`` escapes the next character; anything else is literal;
- in a list, a pattern starting with ``!`` excludes what it matches; patterns apply in order and
  the last one that matches decides, so a list of only negations matches nothing.

Push: with only branch filters, tag pushes do not match; with only tag filters, branch pushes do
not; with neither, every push does. Path filters do not apply to tag pushes. A push that deletes
a ref never matches. ``paths``: at least one changed path must be included; ``paths_ignore``:
skipped only when every changed path is ignored. When the provider does not tell us the changed
paths (Bitbucket pushes, pull requests) path filters are not applied, as GitHub runs the workflow
when it cannot compute the diff.

Pull requests: ``types`` default to opened, synchronize, reopened; ``closed`` also matches a
merged pull request (merged ones are closed), ``merged`` only those. ``branches`` filter the
target branch. Comments: ``command_prefix`` must be the first word of the comment; with a prefix
and no ``types`` only newly created comments match, so editing or deleting an old ``/deploy``
comment does not deploy again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from domain.webhooks.events import TriggerEvent

BRANCH_FILTER_TYPES = ("none", "exact", "wildcard", "regex")
DEFAULT_PULL_REQUEST_TYPES = ("opened", "synchronize", "reopened")
MAX_REGEX_LENGTH = 500


@functools.lru_cache(maxsize=4096)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile one filter pattern (without a leading ``!``); ValueError if it is malformed."""
    out: list[str] = []
    quantifiable = False  # may the next `?` / `+` apply to what came before?
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
                i += 1
            quantifiable = False
            continue
        if char in "?+" and quantifiable:
            out.append(char)
            quantifiable = False
        elif char == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 1
            quantifiable = True
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end in (-1, i + 1):  # no closing bracket, or `[]`: a literal `[`
                out.append(re.escape(char))
            else:
                out.append(_char_class(pattern[i + 1:end]))
                i = end
            quantifiable = True
        else:
            out.append(re.escape(char))
            quantifiable = True
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise ValueError(f"invalid pattern '{pattern}': {exc}") from None


def _char_class(body: str) -> str:
    """A regex class from a glob class: ``a-z`` stays a range, every other character is literal."""
    parts: list[str] = []
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            parts.append(f"{re.escape(body[j])}-{re.escape(body[j + 2])}")
            j += 3
        else:
            # Escaping everything keeps `re` from reading `^`, `&&`, `--` or `[` as set syntax.
            parts.append(re.escape(body[j]))
            j += 1
    return "[" + "".join(parts) + "]"


def filter_matches(patterns: Sequence[str], value: str) -> bool:
    """Does ``value`` pass an ordered include/``!exclude`` pattern list? Malformed patterns never match."""
    result = False
    for raw in patterns:
        negated = raw.startswith("!")
        try:
            regex = glob_regex(raw[1:] if negated else raw)
        except ValueError:
            continue
        if regex.fullmatch(value):
            result = not negated
    return result


def _ref_allowed(include: Sequence[str] | None, ignore: Sequence[str] | None, value: str) -> bool:
    if include is not None and not filter_matches(include, value):
        return False
    return not (ignore is not None and filter_matches(ignore, value))


def _paths_allowed(section: Mapping[str, Any], changed: Sequence[str]) -> bool:
    paths, ignore = section.get("paths"), section.get("paths_ignore")
    if not changed:
        return True
    if paths is not None and not any(filter_matches(paths, path) for path in changed):
        return False
    return not (ignore is not None and all(filter_matches(ignore, path) for path in changed))


def _push(section: Mapping[str, Any], event: TriggerEvent) -> bool:
    if event.deleted:
        return False
    branches, branches_ignore = section.get("branches"), section.get("branches_ignore")
    tags, tags_ignore = section.get("tags"), section.get("tags_ignore")
    has_branch_filter = branches is not None or branches_ignore is not None
    has_tag_filter = tags is not None or tags_ignore is not None
    if event.tag is not None:
        if has_branch_filter and not has_tag_filter:
            return False
        return _ref_allowed(tags, tags_ignore, event.tag)
    if has_tag_filter and not has_branch_filter:
        return False
    return _ref_allowed(branches, branches_ignore, event.branch or "") and _paths_allowed(section, event.changed_paths)


def _pull_request(section: Mapping[str, Any], event: TriggerEvent) -> bool:
    types = section.get("types") or DEFAULT_PULL_REQUEST_TYPES
    wanted = event.action in types or (event.action == "merged" and "closed" in types)
    if not wanted:
        return False
    return (_ref_allowed(section.get("branches"), section.get("branches_ignore"), event.target_branch or "")
            and _paths_allowed(section, event.changed_paths))


def _comment(section: Mapping[str, Any], event: TriggerEvent) -> bool:
    prefix = section.get("command_prefix")
    types = section.get("types") or (("created",) if prefix else None)
    if types is not None and event.action not in types:
        return False
    if not prefix:
        return True
    body = (event.comment_body or "").lstrip()
    # The prefix is a whole word: `/deploy` must not fire on `/deployment-notes`.
    return body.startswith(prefix) and (len(body) == len(prefix) or body[len(prefix)].isspace())


def _types_only(section: Mapping[str, Any], action: str | None) -> bool:
    types = section.get("types")
    return types is None or action in types


def matches(triggers: Mapping[str, Any] | Any, event: TriggerEvent) -> bool:
    """Does a pipeline whose ``triggers`` section is ``triggers`` start a run for ``event``?

    ``triggers`` is the stored document section (``Triggers.model_dump(exclude_none=True)``)
    or a ``Triggers`` model. A kind missing from it never matches; present with no filters
    (``push: {}``) matches every event of that kind.
    """
    if hasattr(triggers, "model_dump"):
        triggers = triggers.model_dump(exclude_none=True)
    if not isinstance(triggers, Mapping) or event.kind not in triggers:
        return False
    section = triggers[event.kind]
    section = {} if section is None else section
    if hasattr(section, "model_dump"):
        section = section.model_dump(exclude_none=True)
    if event.kind == "push":
        return _push(section, event)
    if event.kind == "pull_request":
        return _pull_request(section, event)
    if event.kind == "issue_comment":
        return _comment(section, event)
    if event.kind == "release":
        return _types_only(section, event.release_action)
    return _types_only(section, event.action)


def validate_patterns(triggers: Mapping[str, Any]) -> list[str]:
    """Problems with the filter patterns in a ``triggers`` section, as ``"push.branches[1]: ..."``.

    ``matches`` skips a malformed pattern rather than fail a webhook; call this on save instead.
    """
    problems: list[str] = []
    for kind, section in triggers.items():
        if not isinstance(section, Mapping):
            continue
        for key in ("branches", "branches_ignore", "tags", "tags_ignore", "paths", "paths_ignore"):
            for index, raw in enumerate(section.get(key) or []):
                try:
                    glob_regex(raw.removeprefix("!"))
                except ValueError as exc:
                    problems.append(f"{kind}.{key}[{index}]: {exc}")
    return problems


def validate_branch_filter(filter_type: str, pattern: str | None) -> None:
    """Check a repository branch filter on save; ValueError (a 422) says what is wrong."""
    if filter_type not in BRANCH_FILTER_TYPES:
        raise ValueError(f"unknown branch filter type '{filter_type}'; expected one of: {', '.join(BRANCH_FILTER_TYPES)}")
    if filter_type == "none":
        return
    if not pattern:
        raise ValueError(f"a '{filter_type}' branch filter needs a pattern")
    if filter_type == "wildcard":
        glob_regex(pattern)
    elif filter_type == "regex":
        if len(pattern) > MAX_REGEX_LENGTH:
            raise ValueError(f"the regex is longer than {MAX_REGEX_LENGTH} characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regex '{pattern}': {exc}") from None


def branch_filter_allows(filter_type: str, pattern: str | None, branch: str) -> bool:
    """Does a repository's branch filter let events on ``branch`` through to pipeline matching?

    ``none`` allows all; ``exact`` compares names; ``wildcard`` uses the trigger pattern syntax
    above; ``regex`` must match the whole branch name (anchor-free patterns would otherwise let
    ``main`` through ``maintenance``). A filter that fails validation allows nothing.
    """
    if filter_type == "none":
        return True
    try:
        validate_branch_filter(filter_type, pattern)
    except ValueError:
        return False
    assert pattern is not None  # validated above
    if filter_type == "exact":
        return branch == pattern
    if filter_type == "wildcard":
        return glob_regex(pattern).fullmatch(branch) is not None
    return _regex(pattern).fullmatch(branch) is not None


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
