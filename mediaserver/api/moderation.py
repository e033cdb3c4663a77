"""/moderation/: the moderators' desk (store/moderation.py). The queue of reports,
one report with its evidence (each read goes to the audit log), decisions (a ban's
new state is shared with every node through ctx.on_ban). Anyone but a moderator
(signed out, a bad token, a normal account) gets 404 `not_found`, the answer of a
path that does not exist: the desk is not advertised to them. /appeals: a banned
account appeals a ban, once per decision."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediaserver.api.context import ApiContext
from mediaserver.api.errors import ApiError
from mediaserver.api.operations import Endpoints
from mediaserver.api.schemas import (
    AUTH_ERRORS,
    BEARER,
    BODY_ERRORS,
    NULLABLE_TIME,
    TIME,
    error,
    json_body,
    json_response,
    object_schema,
)
from mediaserver.api.wire import PREFIX, field_name, iso, read_json, text_field
from mediaserver.store import REPORT_REASONS, Profile
from mediaserver.store.moderation import (
    ACTIONS,
    MAX_APPEAL,
    MAX_BAN_SECONDS,
    MAX_NOTE,
    STATUSES,
)
from mediaserver.store.moderation_rows import REPORT_SOURCES

logger = logging.getLogger("mediaserver.api")

_HIDDEN = {"404": error("Not a moderator (or signed out, or no such report): `not_found`")}
_REPORT_PROPS: dict[str, Any] = {
    "id": {"type": "string"},
    "source": {"type": "string", "enum": list(REPORT_SOURCES)},
    "reason": {"type": "string", "enum": list(REPORT_REASONS)},
    "status": {"type": "string", "enum": list(STATUSES)},
    "at": TIME,
    "reported_address": {
        "type": ["string", "null"],
        "description": "The reported visit's keyed address hash (an HMAC; "
        "IPv6: of the /64), never the address",
    },
    "reported_user_id": {"type": ["string", "null"]},
    "reported_handle": {"type": ["string", "null"]},
    "reporter_user_id": {"type": ["string", "null"]},
    "has_evidence": {"type": "boolean"},
    "appeal_of": {"type": ["string", "null"], "description": "An appeal: the decision's id"},
}
ENDPOINTS = Endpoints(
    schemas={
        "ModerationReport": object_schema(_REPORT_PROPS, list(_REPORT_PROPS), closed=False),
        "ModerationQueue": object_schema(
            {
                "reports": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ModerationReport"},
                },
            },
            ["reports"],
        ),
        "ModerationReportDetail": object_schema(
            {
                **_REPORT_PROPS,
                "evidence": {
                    "type": "object",
                    "description": "What the reporter chose to send: `chat` ([{from: reporter|reported, "
                    "text}]); `frame` ({type, bytes, url}: a still of the reported video, "
                    "GET its url) or `frame_missing` (why none was taken); a guardian's "
                    "`contact_email` and `details`; an appeal's `appeal`",
                },
                "decisions": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ModerationDecision"},
                },
            },
            [*_REPORT_PROPS, "evidence", "decisions"],
            closed=False,
        ),
        "ModerationDecisionCreate": object_schema(
            {
                "action": {"type": "string", "enum": list(ACTIONS)},
                "duration_s": {
                    "type": ["number", "null"],
                    "minimum": 1,
                    "maximum": MAX_BAN_SECONDS,
                    "description": "A ban's length in seconds; null or absent: for good. "
                    "Only a ban has one.",
                },
                "note": {"type": "string", "maxLength": MAX_NOTE},
            },
            ["action"],
        ),
        "AppealCreate": object_schema(
            {
                "decision_id": {"type": "string", "maxLength": 64},
                "report_id": {"type": "string", "maxLength": 64},
                "text": {"type": "string", "minLength": 1, "maxLength": MAX_APPEAL},
            },
            ["text"],
        ),
        "Appeal": object_schema(
            {
                "id": {"type": "string"},
                "decision_id": {"type": "string"},
                "report_id": {"type": "string", "description": "The appeal's place in the queue"},
                "at": TIME,
            },
            ["id", "decision_id", "report_id", "at"],
            closed=False,
        ),
        "ModerationDecision": object_schema(
            {
                "id": {"type": "string"},
                "report_id": {"type": "string"},
                "action": {"type": "string", "enum": list(ACTIONS)},
                "until": NULLABLE_TIME,
                "at": TIME,
            },
            ["id", "action", "until", "at"],
            closed=False,
        ),
    }
)


async def moderator(request: Request, ctx: ApiContext) -> Profile:
    """The caller if it is a moderator; anyone else: 404 not_found."""
    try:
        profile = await ctx.authenticate(request)
    except ApiError:
        raise ApiError(404, "not_found", "not found") from None
    if not await ctx.call(ctx.store.is_moderator, profile.id):
        raise ApiError(404, "not_found", "not found")
    return profile


def _report(report: dict[str, Any]) -> dict[str, Any]:
    out = dict(report, at=iso(report["at"]))
    if "decisions" in out:
        out["decisions"] = [_decision(d) for d in out["decisions"]]
    return out


def _decision(decision: dict[str, Any]) -> dict[str, Any]:
    return dict(decision, at=iso(decision["at"]), until=iso(decision["until"]))


@ENDPOINTS.operation(
    "GET",
    "/moderation/reports",
    {
        "operationId": "moderation_queue",
        "summary": "The queue: under-age reports first, then oldest first",
        "security": BEARER,
        "parameters": [
            {
                "name": "status",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(STATUSES), "default": "open"},
            },
            {
                "name": "reason",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(REPORT_REASONS)},
            },
        ],
        "responses": {
            "200": json_response("ModerationQueue", "The reports (no evidence)"),
            **_HIDDEN,
            "422": error("Unknown status or reason (`invalid`)"),
        },
    },
)
async def queue(request: Request, ctx: ApiContext) -> Response:
    await moderator(request, ctx)
    status = request.query_params.get("status", "open")
    reason = request.query_params.get("reason")
    reports = await ctx.call(ctx.store.moderation_queue, status, reason)
    return JSONResponse({"reports": [_report(r) for r in reports]})


_REPORT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


@ENDPOINTS.operation(
    "GET",
    "/moderation/reports/{id}",
    {
        "operationId": "moderation_report",
        "summary": "One report with its evidence and decisions (the read is audited)",
        "description": "Every read is written to the audit log: the moderator, the time, the "
        "report.",
        "security": BEARER,
        "responses": {"200": json_response("ModerationReportDetail", "The report"), **_HIDDEN},
    },
    (_REPORT_ID,),
)
async def report(request: Request, ctx: ApiContext) -> Response:
    profile = await moderator(request, ctx)
    found = await ctx.call(ctx.store.moderation_report, profile.id, request.path_params["id"])
    frame = found["evidence"].get("frame")
    if isinstance(frame, dict):
        frame["url"] = f"{PREFIX}/moderation/reports/{found['id']}/frame"
    return JSONResponse(_report(found))


@ENDPOINTS.operation(
    "GET",
    "/moderation/reports/{id}/frame",
    {
        "operationId": "moderation_report_frame",
        "summary": "The still of the reported video a report carries (JPEG; the read is audited)",
        "description": "Taken by the server at the report when the reporter asked for it; "
        "deleted with the rest of the evidence after 30 days. Every read is written "
        "to the audit log.",
        "security": BEARER,
        "responses": {
            "200": {
                "description": "The still (JPEG)",
                "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            },
            **_HIDDEN,
        },
    },
    (_REPORT_ID,),
)
async def report_frame(request: Request, ctx: ApiContext) -> Response:
    profile = await moderator(request, ctx)
    jpeg = await ctx.call(ctx.store.moderation_frame, profile.id, request.path_params["id"])
    # evidence: never kept by a shared cache, never sniffed as anything but a JPEG
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@ENDPOINTS.operation(
    "POST",
    "/moderation/reports/{id}/decision",
    {
        "operationId": "moderation_decide",
        "summary": "Decide an open report: dismiss, warn (a notice) or ban (account and address)",
        "description": "A ban holds by account and by the visit's address hash, on every node. "
        "Banning an `underage` report confirms it: the account is deleted at "
        "once and the address hash banned. On an appeal, dismiss keeps the "
        "appealed ban; warn or ban lifts it first.",
        "security": BEARER,
        "requestBody": json_body("ModerationDecisionCreate"),
        "responses": {
            "201": json_response("ModerationDecision", "Decided"),
            **_HIDDEN,
            "409": error("Decided already, or a legal hold keeps the account"),
            **BODY_ERRORS,
        },
    },
    (_REPORT_ID,),
)
async def decide(request: Request, ctx: ApiContext) -> Response:
    profile = await moderator(request, ctx)
    body = await read_json(request)
    for key in body:
        if key not in ("action", "duration_s", "note"):
            raise ApiError(422, "invalid", f"unknown field {key!r}", field_name(key))
    if "action" not in body:
        raise ApiError(422, "invalid", "action is required", "action")
    action = text_field(body["action"], "action", 16)
    note = text_field(body.get("note", ""), "note", MAX_NOTE)
    decision = await ctx.call(
        ctx.store.decide,
        profile.id,
        request.path_params["id"],
        action,
        body.get("duration_s"),
        note,
    )
    bans = decision.pop("bans")
    if bans and ctx.on_ban is not None:
        try:
            await ctx.on_ban(bans)
        except Exception:
            # kept in SQLite (every node sharing the file sees it); the shared copy
            # is the one that failed: say so, the decision stands
            logger.exception("sharing a ban with the other nodes failed")
    return JSONResponse(_decision(decision), status_code=201)


@ENDPOINTS.operation(
    "POST",
    "/appeals",
    {
        "operationId": "appeal_decision",
        "summary": "A banned account appeals the ban, once per decision (back into the queue)",
        "description": "Name the decision by `decision_id`, or by the report it decided "
        "(`report_id`). The appeal goes to the moderators' queue.",
        "security": BEARER,
        "requestBody": json_body("AppealCreate"),
        "responses": {
            "201": json_response("Appeal", "Filed"),
            **AUTH_ERRORS,
            "404": error("No ban decision on your account by that id"),
            "409": error("Appealed already (`conflict`)"),
            **BODY_ERRORS,
        },
    },
)
async def appeal(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate(request)
    body = await read_json(request)
    for key in body:
        if key not in ("report_id", "decision_id", "text"):
            raise ApiError(422, "invalid", f"unknown field {key!r}", field_name(key))
    if ("report_id" in body) == ("decision_id" in body):
        raise ApiError(422, "invalid", "give report_id or decision_id, one of them", "decision_id")
    if "text" not in body:
        raise ApiError(422, "invalid", "text is required", "text")
    text = text_field(body["text"], "text", MAX_APPEAL, allow_empty=False)
    ids = {
        key: text_field(body[key], key, 64, allow_empty=False)
        for key in ("report_id", "decision_id")
        if key in body
    }
    filed = await ctx.call(ctx.store.appeal, profile.id, text, **ids)
    return JSONResponse(dict(filed, at=iso(filed["at"])), status_code=201)
