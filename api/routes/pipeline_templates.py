"""Pipeline templates and their marketplace (the seed's PipelineTemplate): CRUD for the owner
account, semantic versions, publish and archive, install as a pipeline, and ratings.

Only the owner account changes a template; another account sees it (and may install and rate
it) only while it is public and published. See ``services.templates`` for the rules."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from api.deps import CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.pipeline_views import pipeline_public, validated
from api.schemas import (
    PipelinePublic,
)
from api.template_schemas import (
    TemplateCreate,
    TemplateInstallRequest,
    TemplatePublic,
    TemplatePublishRequest,
    TemplateRatingCreate,
    TemplateRatingPublic,
    TemplateRatingsPublic,
    TemplatesPublic,
    TemplateUpdate,
    TemplateVersionCreate,
    TemplateVersionPublic,
    TemplateVersionUpdate,
)
from db.models import PipelineTemplate, PipelineTemplateRating, PipelineTemplateVersion
from domain.pipeline_document import ExecutorRules, slugify
from services import schedules as schedule_service
from services import templates
from services.templates import MarketplaceSort, TemplateCategory, TemplateDifficulty

router = APIRouter(prefix="/pipeline_templates", tags=["pipeline templates"])

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]


def version_public(row: PipelineTemplateVersion) -> TemplateVersionPublic:
    return TemplateVersionPublic(version=row.version, changelog=row.changelog, published=row.published_at is not None,
                                 published_at=row.published_at, created_at=row.created_at, document=row.document)


def describe(session: Session, account_id: int, rows: list[PipelineTemplate], *,
             with_versions: bool = False) -> list[TemplatePublic]:
    """The templates as the caller sees them, with their latest versions and the caller's own
    rating, in three queries whatever the number of templates."""
    ids = [t.id for t in rows]
    if with_versions:
        versions: dict[int, list] = {t.id: templates.versions_of(session, t, account_id) for t in rows}
    else:
        versions = defaultdict(list)
        for row in session.execute(select(PipelineTemplateVersion.template_id, PipelineTemplateVersion.version,
                                          PipelineTemplateVersion.published_at)
                                   .where(PipelineTemplateVersion.template_id.in_(ids))):
            versions[row.template_id].append(row)
    mine = dict(session.execute(select(PipelineTemplateRating.template_id, PipelineTemplateRating.rating)
                                .where(PipelineTemplateRating.account_id == account_id,
                                       PipelineTemplateRating.template_id.in_(ids))).all())
    described = []
    for t in rows:
        owner = t.account_id == account_id
        seen = [v for v in versions[t.id] if owner or v.published_at is not None]
        newest, published = templates.latest(seen), templates.latest(seen, published=True)
        described.append(TemplatePublic(
            id=t.id, name=t.name, slug=t.slug, description=t.description, category=t.category,
            difficulty=t.difficulty, status=t.status, is_public=t.is_public, is_owner=owner,
            installation_count=t.installation_count, rating_average=t.rating_average, rating_count=t.rating_count,
            my_rating=mine.get(t.id), latest_version=newest.version if newest else None,
            published_version=published.version if published else None,
            created_at=t.created_at, updated_at=t.updated_at,
            versions=[version_public(v) for v in reversed(seen)] if with_versions else None,
        ))
    return described


def detail(session: Session, account_id: int, template: PipelineTemplate) -> TemplatePublic:
    [one] = describe(session, account_id, [template], with_versions=True)
    return one


def page(session: Session, account_id: int, query: Select, limit: int, offset: int) -> TemplatesPublic:
    count = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = list(session.scalars(query.limit(limit).offset(offset)))
    return TemplatesPublic(data=describe(session, account_id, rows), count=count)


@router.get("", response_model=TemplatesPublic)
def list_pipeline_templates(session: SessionDep, caller: CurrentCaller,
                            status_: Annotated[templates.TemplateStatus | None, Query(alias="status")] = None,
                            category: TemplateCategory | None = None, difficulty: TemplateDifficulty | None = None,
                            limit: Limit = 100, offset: Offset = 0) -> TemplatesPublic:
    """The caller's account's own templates, in every state."""
    query = select(PipelineTemplate).where(PipelineTemplate.account_id == caller.account_id)
    for column, value in ((PipelineTemplate.status, status_), (PipelineTemplate.category, category),
                          (PipelineTemplate.difficulty, difficulty)):
        if value is not None:
            query = query.where(column == value)
    return page(session, caller.account_id, query.order_by(PipelineTemplate.id), limit, offset)


@router.get("/marketplace", response_model=TemplatesPublic)
def browse_template_marketplace(session: SessionDep, caller: CurrentCaller,
                                q: Annotated[str | None, Query(max_length=200, description="search in name and description")] = None,
                                category: TemplateCategory | None = None, difficulty: TemplateDifficulty | None = None,
                                sort: MarketplaceSort = "rating", limit: Limit = 100, offset: Offset = 0) -> TemplatesPublic:
    """Public published templates of every account (the caller's own included). ``rating``:
    highest average first; ``installs``: most installed first; ``newest``: latest created first."""
    query = templates.marketplace_query(q=q, category=category, difficulty=difficulty, sort=sort)
    return page(session, caller.account_id, query, limit, offset)


@router.post("", response_model=TemplatePublic, status_code=status.HTTP_201_CREATED)
def create_pipeline_template(session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                             body: TemplateCreate) -> TemplatePublic:
    """A draft template, private until ``is_public`` and published; optionally with its first version."""
    document = None
    if body.initial_version is not None:
        validated(body.initial_version.document, ("body", "initial_version", "document"), settings=settings)
        document = body.initial_version.document
    slug = body.slug or slugify(body.name)
    if templates.template_slug_taken(session, caller.account_id, slug):
        raise templates.slug_clash(slug, "template")
    with templates.refuse_duplicate(session, templates.slug_clash(slug, "template")):
        template = PipelineTemplate(account_id=caller.account_id, name=body.name, slug=slug,
                                    description=body.description, category=body.category,
                                    difficulty=body.difficulty, is_public=body.is_public)
        session.add(template)
        session.flush()
        if body.initial_version is not None:
            templates.add_version(session, template, body.initial_version.version, document,
                                  body.initial_version.changelog)
        session.commit()
    return detail(session, caller.account_id, template)


@router.get("/{template_id}", response_model=TemplatePublic)
def show_pipeline_template(template_id: int, session: SessionDep, caller: CurrentCaller) -> TemplatePublic:
    """The template with the versions the caller may see (newest first, with documents)."""
    return detail(session, caller.account_id, templates.visible_template(session, caller.account_id, template_id))


@router.patch("/{template_id}", response_model=TemplatePublic)
def update_pipeline_template(template_id: int, session: SessionDep, caller: WriterCaller,
                             body: TemplateUpdate) -> TemplatePublic:
    """Change metadata (name, slug, description, category, difficulty, is_public); the status
    changes only through publish and archive, documents only through versions."""
    template = templates.owned_template(session, caller.account_id, template_id)
    changes = body.model_dump(exclude_unset=True)
    slug = changes.get("slug")
    if slug is not None and templates.template_slug_taken(session, caller.account_id, slug, template.id):
        raise templates.slug_clash(slug, "template")
    with templates.refuse_duplicate(session, templates.slug_clash(slug or template.slug, "template")):
        for field, value in changes.items():
            setattr(template, field, value)
        session.commit()
    return detail(session, caller.account_id, template)


@router.delete("/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_pipeline_template(template_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    """Delete the template with its versions and ratings; pipelines installed from it stay."""
    template = templates.owned_template(session, caller.account_id, template_id)
    session.execute(delete(PipelineTemplate).where(PipelineTemplate.id == template.id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{template_id}/versions", response_model=TemplateVersionPublic, status_code=status.HTTP_201_CREATED)
def create_template_version(template_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                            body: TemplateVersionCreate) -> TemplateVersionPublic:
    """A new draft version, higher than every existing one; its document is validated like a pipeline's."""
    template = templates.owned_template(session, caller.account_id, template_id)
    validated(body.document, ("body", "document"), settings=settings)
    with templates.refuse_duplicate(session, templates.version_clash(body.version)):
        row = templates.add_version(session, template, body.version, body.document, body.changelog)
        session.commit()
    return version_public(row)


@router.get("/{template_id}/versions/{version}", response_model=TemplateVersionPublic)
def show_template_version(template_id: int, version: str, session: SessionDep, caller: CurrentCaller) -> TemplateVersionPublic:
    template = templates.visible_template(session, caller.account_id, template_id)
    return version_public(templates.find_version(session, template, caller.account_id, version))


@router.put("/{template_id}/versions/{version}", response_model=TemplateVersionPublic)
def replace_template_version(template_id: int, version: str, session: SessionDep, caller: WriterCaller,
                             settings: SettingsDep, body: TemplateVersionUpdate) -> TemplateVersionPublic:
    """Replace a draft version's document and changelog; a published version answers 409."""
    template = templates.owned_template(session, caller.account_id, template_id)
    row = templates.find_version(session, template, caller.account_id, version)
    validated(body.document, ("body", "document"), settings=settings)
    templates.update_version(session, template, row, body.document, body.changelog)
    session.commit()
    session.refresh(row)
    return version_public(row)


@router.post("/{template_id}/publish", response_model=TemplatePublic)
def publish_pipeline_template(template_id: int, session: SessionDep, caller: WriterCaller,
                              body: TemplatePublishRequest | None = None) -> TemplatePublic:
    """Publish the template and one version (default: the highest), which becomes immutable."""
    template = templates.owned_template(session, caller.account_id, template_id)
    templates.publish(session, template, (body or TemplatePublishRequest()).version)
    session.commit()
    return detail(session, caller.account_id, template)


@router.post("/{template_id}/archive", response_model=TemplatePublic)
def archive_pipeline_template(template_id: int, session: SessionDep, caller: WriterCaller) -> TemplatePublic:
    """Take the template out of the marketplace; nobody can install it until it is published again."""
    template = templates.owned_template(session, caller.account_id, template_id)
    template.status = "archived"
    session.commit()
    return detail(session, caller.account_id, template)


@router.post("/{template_id}/install", response_model=PipelinePublic, status_code=status.HTTP_201_CREATED)
def install_pipeline_template(template_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep,
                              settings: SettingsDep, body: TemplateInstallRequest | None = None) -> PipelinePublic:
    """Create a pipeline in the caller's account from a version (default: the highest
    published one), exactly as ``POST /pipelines`` would (a ``triggers.schedule`` gets its
    schedule). A slug already used by a pipeline of the account answers 409."""
    body = body or TemplateInstallRequest()
    template = templates.visible_template(session, caller.account_id, template_id)
    row = templates.installable_version(session, template, caller.account_id, body.version)
    document = templates.install_document(row, ExecutorRules.from_settings(settings), name=body.name, slug=body.slug)
    with templates.refuse_duplicate(session, templates.slug_clash(document.resolved_slug(), "pipeline")):
        pipeline = templates.install(session, caller.account_id, template, row, document)
        schedule_service.sync_pipeline_schedules(session, temporal, settings, pipeline)
        session.commit()
    return pipeline_public(pipeline)


@router.post("/{template_id}/rate", response_model=TemplatePublic)
def rate_pipeline_template(template_id: int, session: SessionDep, caller: WriterCaller,
                           body: TemplateRatingCreate) -> TemplatePublic:
    """Rate 1..5 with an optional review; rating again replaces the account's earlier rating.
    Rating your own template is refused (409)."""
    template = templates.visible_template(session, caller.account_id, template_id, for_update=True)
    templates.rate(session, caller.account_id, template, body.rating, body.review)
    session.commit()
    session.refresh(template)
    return detail(session, caller.account_id, template)


@router.get("/{template_id}/ratings", response_model=TemplateRatingsPublic)
def list_template_ratings(template_id: int, session: SessionDep, caller: CurrentCaller,
                          limit: Limit = 100, offset: Offset = 0) -> TemplateRatingsPublic:
    """The template's ratings, most recently changed first (raters stay anonymous)."""
    template = templates.visible_template(session, caller.account_id, template_id)
    query = select(PipelineTemplateRating).where(PipelineTemplateRating.template_id == template.id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(PipelineTemplateRating.updated_at.desc(), PipelineTemplateRating.id.desc())
                           .limit(limit).offset(offset))
    return TemplateRatingsPublic(data=[
        TemplateRatingPublic(rating=r.rating, review=r.review, is_mine=r.account_id == caller.account_id,
                             created_at=r.created_at, updated_at=r.updated_at) for r in rows
    ], count=count)
