"""Pipeline templates (the seed's ``PipelineTemplate``): reusable pipeline documents, versioned
with semantic versions, shared through the marketplace, installed as pipelines and rated.

Who sees what: the owner account sees and changes its templates in every state; every other
account sees a template only while it is public and published, sees only its published
versions, and never changes it. Anything else answers 404, exactly like an id that does not
exist, so nothing hints that a private template is there.

Counters stay exact under concurrency: an install bumps ``installation_count`` with one
``UPDATE ... SET n = n + 1``; a rating locks the template row, upserts the account's rating
and recomputes the average and count from the ratings table in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ValidationError
from pydantic_core import PydanticCustomError
from sqlalchemy import Float, Select, cast, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Pipeline, PipelineTemplate, PipelineTemplateRating, PipelineTemplateVersion, utcnow
from domain import errors
from domain.pipeline_document import ExecutorRules, PipelineDocument, validate_document
from domain.statuses import TemplateStatus  # noqa: F401  (the one list of template statuses)
from services import runs as services

TemplateCategory = Literal["review", "implement", "security", "deploy", "docs", "custom"]
TemplateDifficulty = Literal["beginner", "intermediate", "advanced", "expert"]
MarketplaceSort = Literal["rating", "installs", "newest"]

# semver.org 2.0.0 without build metadata: build metadata does not take part in precedence,
# so `1.0.0+a` and `1.0.0+b` would be two different versions that neither precedes.
_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER = re.compile(rf"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-({_IDENT}(?:\.{_IDENT})*))?", re.ASCII)
SEMVER_MAX_LENGTH = 50  # the version column's width


# ---- semantic versions (pure) -------------------------------------------------------------


def semver_key(version: str) -> tuple[Any, ...]:
    """A sort key giving semver precedence: ``1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta <
    1.0.0 < 1.0.1``. Numeric pre-release identifiers compare as numbers and rank below
    alphanumeric ones; a release ranks above its pre-releases. Raises ``ValueError``."""
    match = SEMVER.fullmatch(version) if len(version) <= SEMVER_MAX_LENGTH else None
    if match is None:
        raise ValueError(f"'{version}' is not a semantic version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    identifiers = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return int(major), int(minor), int(patch), 0, identifiers


def check_semver(value: str) -> str:
    """Pydantic validator: ``value`` must be ``MAJOR.MINOR.PATCH`` with an optional pre-release."""
    try:
        semver_key(value)
    except ValueError:
        raise PydanticCustomError(
            "semver", "'{value}' is not a semantic version: expected MAJOR.MINOR.PATCH with an optional "
            "-pre-release, without leading zeros (e.g. 1.2.0 or 2.0.0-rc.1)", {"value": value},
        ) from None
    return value


TemplateVersionString = Annotated[str, AfterValidator(check_semver)]


def by_precedence(versions: Iterable[PipelineTemplateVersion]) -> list[PipelineTemplateVersion]:
    """Versions from the lowest to the highest precedence."""
    return sorted(versions, key=lambda v: semver_key(v.version))


def latest(versions: Iterable[Any], *, published: bool = False) -> Any | None:
    """The highest version (of rows with ``version`` and ``published_at``), or None."""
    candidates = [v for v in versions if not published or v.published_at is not None]
    return max(candidates, key=lambda v: semver_key(v.version), default=None)


# ---- finding templates ---------------------------------------------------------------------


def _marketplace_visible() -> Any:
    return (PipelineTemplate.is_public.is_(True)) & (PipelineTemplate.status == "published")


def visible_template(session: Session, account_id: int, template_id: int, *,
                     for_update: bool = False) -> PipelineTemplate:
    """A template the caller may see: its own, or another account's public published one."""
    query = select(PipelineTemplate).where(
        PipelineTemplate.id == template_id,
        or_(PipelineTemplate.account_id == account_id, _marketplace_visible()),
    )
    if for_update:
        query = query.with_for_update()  # PostgreSQL row lock; SQLite serialises writers anyway
    template = session.scalar(query)
    if template is None:
        raise errors.not_found("pipeline template")
    return template


def owned_template(session: Session, account_id: int, template_id: int) -> PipelineTemplate:
    """A template of the caller's account; another account's (even a public one) is 404."""
    template = session.scalar(select(PipelineTemplate).where(PipelineTemplate.id == template_id,
                                                             PipelineTemplate.account_id == account_id))
    if template is None:
        raise errors.not_found("pipeline template")
    return template


def versions_of(session: Session, template: PipelineTemplate, account_id: int) -> list[PipelineTemplateVersion]:
    """The versions the caller may see (the owner all, others the published ones), lowest first."""
    query = select(PipelineTemplateVersion).where(PipelineTemplateVersion.template_id == template.id)
    if template.account_id != account_id:
        query = query.where(PipelineTemplateVersion.published_at.is_not(None))
    return by_precedence(session.scalars(query))


def find_version(session: Session, template: PipelineTemplate, account_id: int,
                 version: str) -> PipelineTemplateVersion:
    """One version by its string (404 when the caller cannot see it)."""
    for row in versions_of(session, template, account_id):
        if row.version == version:
            return row
    raise errors.not_found("template version")


def marketplace_query(*, q: str | None, category: str | None, difficulty: str | None,
                      sort: MarketplaceSort) -> Select[tuple[PipelineTemplate]]:
    """Public published templates of every account, searched, filtered and ordered."""
    query = select(PipelineTemplate).where(_marketplace_visible())
    if q:
        needle = q.strip().lower()
        query = query.where(or_(func.lower(PipelineTemplate.name).contains(needle, autoescape=True),
                                func.lower(PipelineTemplate.description).contains(needle, autoescape=True)))
    if category is not None:
        query = query.where(PipelineTemplate.category == category)
    if difficulty is not None:
        query = query.where(PipelineTemplate.difficulty == difficulty)
    order = {
        "rating": (PipelineTemplate.rating_average.desc(), PipelineTemplate.rating_count.desc(),
                   PipelineTemplate.installation_count.desc()),
        "installs": (PipelineTemplate.installation_count.desc(), PipelineTemplate.rating_average.desc()),
        "newest": (PipelineTemplate.created_at.desc(),),
    }[sort]
    return query.order_by(*order, PipelineTemplate.id.desc())


# ---- changing templates --------------------------------------------------------------------


def slug_clash(slug: str, what: str) -> errors.Conflict:
    """409 naming the slug field, in the shape ``services.runs.apply_document`` uses."""
    return errors.conflict([{
        "loc": ["body", "slug"], "type": "slug_taken",
        "msg": f"slug '{slug}' is already used by another {what} of this account; set a different `slug`",
    }])


def version_clash(version: str, problem: str = "already exists") -> errors.Conflict:
    return errors.conflict([{
        "loc": ["body", "version"], "type": "version_order",
        "msg": f"version {version} {problem}; a new version must be higher than every existing one "
               "(by semantic version precedence)",
    }])


@contextmanager
def refuse_duplicate(session: Session, clash: errors.Conflict) -> Iterator[None]:
    """Turn a unique constraint firing — a concurrent request took the slug or version between
    our check and our insert — into the same 409 as the check."""
    try:
        yield
    except IntegrityError:
        session.rollback()
        raise clash from None


def template_slug_taken(session: Session, account_id: int, slug: str, exclude_id: int | None = None) -> bool:
    query = select(PipelineTemplate.id).where(PipelineTemplate.account_id == account_id,
                                              PipelineTemplate.slug == slug)
    if exclude_id is not None:
        query = query.where(PipelineTemplate.id != exclude_id)
    return session.scalar(query) is not None


def add_version(session: Session, template: PipelineTemplate, version: str, document: dict[str, Any],
                changelog: str) -> PipelineTemplateVersion:
    """A new draft version; it must be higher than every existing version of the template.
    ``document`` must already be validated (``PipelineDocument``)."""
    existing = session.scalars(select(PipelineTemplateVersion.version)
                               .where(PipelineTemplateVersion.template_id == template.id)).all()
    highest = max(existing, key=semver_key, default=None)
    if version in existing:
        raise version_clash(version)
    if highest is not None and semver_key(version) <= semver_key(highest):
        raise version_clash(version, f"is not higher than the latest version {highest}")
    row = PipelineTemplateVersion(template_id=template.id, version=version, document=document, changelog=changelog)
    session.add(row)
    template.updated_at = utcnow()
    session.flush()
    return row


def update_version(session: Session, template: PipelineTemplate, row: PipelineTemplateVersion,
                   document: dict[str, Any], changelog: str) -> None:
    """Replace a draft version's document and changelog; a published version is immutable,
    also when it is published while this request runs (the UPDATE only matches a draft)."""
    changed = session.execute(
        update(PipelineTemplateVersion)
        .where(PipelineTemplateVersion.id == row.id, PipelineTemplateVersion.published_at.is_(None))
        .values(document=document, changelog=changelog)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not changed:
        raise errors.conflict(f"version {row.version} is published and cannot be changed; "
                              "add a new version instead")
    template.updated_at = utcnow()


def publish(session: Session, template: PipelineTemplate, version: str | None) -> PipelineTemplateVersion:
    """Publish the template and one of its versions (default: the highest). Publishing an
    archived template brings it back."""
    versions = versions_of(session, template, template.account_id)
    if not versions:
        raise errors.conflict("the template has no version to publish; add one with "
                              f"POST /pipeline_templates/{template.id}/versions first")
    if version is None:
        row = versions[-1]
    else:
        row = next((v for v in versions if v.version == version), None)
        if row is None:
            raise errors.field_error(["version"], f"the template has no version '{version}'; versions: "
                                     f"{', '.join(v.version for v in versions)}", "unknown_version")
    if row.published_at is None:
        row.published_at = utcnow()
    template.status = "published"
    return row


def installable_version(session: Session, template: PipelineTemplate, account_id: int,
                        version: str | None) -> PipelineTemplateVersion:
    """The version an install uses: the one asked for, or the highest published one. Only
    the owner may install a draft version (to try it before publishing)."""
    if template.status == "archived":
        raise errors.conflict("this template is archived: it cannot be installed any more")
    versions = versions_of(session, template, account_id)
    if version is None:
        row = latest(versions, published=True)
        if row is None:
            raise errors.conflict("the template has no published version; publish one, or name a draft "
                                  "version with `version` to install it")
        return row
    row = next((v for v in versions if v.version == version), None)
    if row is None:
        kind = "" if template.account_id == account_id else "published "
        raise errors.field_error(["version"], f"the template has no {kind}version '{version}'; {kind}versions: "
                                 f"{', '.join(v.version for v in versions) or 'none'}", "unknown_version")
    return row


def install_document(row: PipelineTemplateVersion, rules: ExecutorRules, *, name: str | None = None,
                     slug: str | None = None) -> PipelineDocument:
    """The version's document with the installer's overrides, validated. A new ``name``
    without a ``slug`` derives the slug from the new name."""
    document = dict(row.document)
    if name is not None:
        document["name"] = name
        if slug is None:
            document.pop("slug", None)
    if slug is not None:
        document["slug"] = slug
    try:
        return validate_document(document, rules)
    except ValidationError as exc:  # it validated when saved: the rules changed since
        raise errors.conflict(f"version {row.version} no longer validates as a pipeline document "
                              f"({exc.errors()[0]['msg']}); the template's owner must publish a fixed version") from None


def install(session: Session, account_id: int, template: PipelineTemplate, row: PipelineTemplateVersion,
            document: PipelineDocument) -> Pipeline:
    """Create a pipeline in ``account_id`` from the version's (validated) document, remember
    where it came from, and count the install."""
    pipeline = services.apply_document(session, account_id, document)
    pipeline.template_version_id = row.id
    session.execute(
        update(PipelineTemplate).where(PipelineTemplate.id == template.id)
        # atomic in the database; updated_at kept: an install is not an edit of the template
        .values(installation_count=PipelineTemplate.installation_count + 1, updated_at=PipelineTemplate.updated_at)
    )
    session.flush()
    return pipeline


def rate(session: Session, account_id: int, template: PipelineTemplate, rating: int, review: str) -> None:
    """Store the account's rating (replacing an earlier one) and recompute the template's
    average and count. The caller must have loaded ``template`` with ``for_update=True`` so
    concurrent ratings of one template queue on its row and each recount sees the others."""
    if template.account_id == account_id:
        raise errors.conflict("you cannot rate your own template")
    now = utcnow()
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(
        PipelineTemplateRating)
    statement = insert.values(template_id=template.id, account_id=account_id, rating=rating, review=review,
                              created_at=now, updated_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=["template_id", "account_id"],
        set_={"rating": statement.excluded.rating, "review": statement.excluded.review,
              "updated_at": statement.excluded.updated_at},
    ))
    ratings = select(PipelineTemplateRating.rating).where(PipelineTemplateRating.template_id == template.id).subquery()
    session.execute(
        update(PipelineTemplate).where(PipelineTemplate.id == template.id).values(
            rating_count=select(func.count()).select_from(ratings).scalar_subquery(),
            rating_average=select(func.coalesce(func.avg(cast(ratings.c.rating, Float)), 0.0)).scalar_subquery(),
            updated_at=PipelineTemplate.updated_at,
        )
    )
