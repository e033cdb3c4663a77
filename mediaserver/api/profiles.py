"""/profiles and /profiles/{id}: create, read, change and delete your own profile."""

from __future__ import annotations

from datetime import date
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
    CURRENT_PASSWORD,
    GPC_PARAM,
    ID_PARAM,
    NOT_FOUND,
    TIME,
    error,
    json_body,
    json_response,
    rate_limited,
)
from mediaserver.api.wire import MAX_BODY, PREFIX, field_name, iso, read_json, text_field
from mediaserver.store import (
    LANGUAGE_MAX,
    MAX_BIO,
    MAX_INTEREST_LEN,
    MAX_INTERESTS,
    MAX_LINK_LEN,
    MAX_LINKS,
    MAX_LOCATION,
    OBJECTION_PURPOSES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    USERNAME_MAX,
    USERNAME_MIN,
    Profile,
)
from mediaserver.store.contact import EMAIL_MAX, NAME_MAX, POLICY_VERSION_MAX, Contact

PROFILE_FIELDS = (
    "username",
    "date_of_birth",
    "bio",
    "interests",
    "language",
    "chat_history_consent",
    "discoverable",
    "password",
    "links",
    "location",
    "show_links",
    "show_location",
    "name",
    "email",
    "policy_version",
)
IDENTIFYING = frozenset({"username", "date_of_birth", "email"})
"""PATCH fields that need the password or a fresh sign-in (as two-factor changes do)."""


def profile_json(p: Profile, c: Contact) -> dict[str, Any]:
    """A profile as its owner reads it (with its contact fields and policy)."""
    return {
        "name": c.name,
        "email": c.email,
        "email_verified": c.email_verified,
        "policy_accepted": c.policy_accepted,
        "policy_current": c.policy_current,
        "id": p.id,
        "username": p.username,
        "date_of_birth": p.date_of_birth,
        "bio": p.bio,
        "interests": list(p.interests),
        "language": p.language,
        "chat_history_consent": p.chat_history_consent,
        "opted_out": p.opted_out,
        "discoverable": p.discoverable,
        "has_password": p.has_password,
        "two_factor": p.two_factor,
        "photo_url": f"{PREFIX}/profiles/{p.id}/photo" if p.photo_id else None,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
        "last_seen_at": iso(p.last_seen_at),
        "links": list(p.links),
        "location": p.location,
        "show_links": p.show_links,
        "show_location": p.show_location,
        "restricted": p.restricted,
        "objections": list(p.objections),
    }


async def owner_contact(request: Request, ctx: ApiContext, profile: Profile) -> Contact:
    """The contact fields of the caller's own profile. An account deleted since the
    token was checked answers like its token now does (401), not with a 404."""
    try:
        contact: Contact = await ctx.call(ctx.store.contact, profile.id)
    except ApiError as exc:
        if exc.status == 404:
            await ctx.authenticate(request)  # raises: the token went with the account
        raise
    return contact


def check_field(field: str, value: Any) -> Any:
    """One profile field, type- and size-checked against the store's bounds (the
    store checks the rest: the username's characters, the age, ...)."""
    if field == "username":
        return text_field(value, field, USERNAME_MAX, allow_empty=False)
    if field == "date_of_birth":
        text = text_field(value, field, 10, allow_empty=False)
        try:
            if len(text) != 10:
                raise ValueError
            date.fromisoformat(text)
        except ValueError:
            raise ApiError(
                422, "invalid", "date_of_birth must be a date, YYYY-MM-DD", field
            ) from None
        return text
    if field == "bio":
        return text_field(value, field, MAX_BIO)
    if field == "language":
        if value is None:
            return None
        return text_field(value, field, LANGUAGE_MAX, allow_empty=False)
    if field == "interests":
        if not isinstance(value, list):
            raise ApiError(422, "invalid", "interests must be a list of strings", field)
        if len(value) > MAX_INTERESTS:
            raise ApiError(
                422, "invalid", f"interests must hold at most {MAX_INTERESTS} items", field
            )
        return [_interest(item) for item in value]
    if field == "password":
        return text_field(value, field, PASSWORD_MAX, allow_empty=False)
    if field == "links":
        if not isinstance(value, list):
            raise ApiError(422, "invalid", "links must be a list of URLs", field)
        if len(value) > MAX_LINKS:
            raise ApiError(422, "invalid", f"links must hold at most {MAX_LINKS} URLs", field)
        return [text_field(item, field, MAX_LINK_LEN, allow_empty=False) for item in value]
    if field == "location":
        if value is None:
            return None
        return text_field(value, field, MAX_LOCATION)
    if field in ("name", "email"):  # null clears it (PATCH)
        if value is None:
            return None
        return text_field(value, field, NAME_MAX if field == "name" else EMAIL_MAX,
                          allow_empty=False)
    if field == "policy_version":
        return text_field(value, field, POLICY_VERSION_MAX, allow_empty=False)
    if field in ("chat_history_consent", "discoverable", "show_links", "show_location"):
        if not isinstance(value, bool):
            raise ApiError(422, "invalid", f"{field} must be true or false", field)
        return value
    raise ApiError(422, "invalid", f"unknown field {field!r}", field)  # pragma: no cover


def _interest(item: Any) -> str:
    # the store measures an interest after stripping it: so do we
    text = text_field(item, "interests", MAX_BODY, allow_empty=False)
    if len(text.strip()) > MAX_INTEREST_LEN:
        raise ApiError(
            422, "invalid", f"each interest must be at most {MAX_INTEREST_LEN} characters",
            "interests",
        )
    return text


def profile_fields(
    body: dict[str, Any], required: tuple[str, ...], creating: bool = False
) -> dict[str, Any]:
    """The profile fields of a JSON body, checked; unknown ones are 422s."""
    out: dict[str, Any] = {}
    for key in body:
        if key not in PROFILE_FIELDS:
            raise ApiError(422, "invalid", f"unknown field {key!r}", field_name(key))
        if key == "password" and not creating:
            raise ApiError(
                422, "invalid", "change the password with PUT .../password", "password"
            )
        if key == "policy_version" and not creating:
            raise ApiError(
                422, "invalid", "accept a policy with POST .../policy", "policy_version"
            )
    for key in required:
        if key not in body:
            raise ApiError(422, "invalid", f"{key} is required", key)
    for key in PROFILE_FIELDS:
        if key in body:
            out[key] = check_field(key, body[key])
    return out


_PROFILE_PROPS: dict[str, Any] = {
    "username": {
        "type": "string",
        "pattern": f"^[A-Za-z0-9_.-]{{{USERNAME_MIN},{USERNAME_MAX}}}$",
        "description": f"{USERNAME_MIN}-{USERNAME_MAX} characters: letters, digits, _ . -; "
                       "unique",
    },
    "date_of_birth": {
        "type": "string",
        "format": "date",
        "description": "YYYY-MM-DD; under 18 is refused (422, field date_of_birth)",
    },
    "bio": {"type": "string", "maxLength": MAX_BIO},
    "interests": {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_INTEREST_LEN},
        "maxItems": MAX_INTERESTS,
        "description": "Lower-cased, de-duplicated; they feed the matchmaker",
    },
    "language": {
        "type": ["string", "null"],
        "pattern": f"^[A-Za-z0-9_-]{{2,{LANGUAGE_MAX}}}$",
        "description": "A language tag such as en or pt-BR",
    },
    "chat_history_consent": {
        "type": "boolean",
        "description": "Opt in to chat history being stored (encrypted)",
    },
    "discoverable": {
        "type": "boolean",
        "description": "List this profile's card when signed-in people browse (default false)",
    },
    "links": {
        "type": "array",
        "items": {"type": "string", "format": "uri", "maxLength": MAX_LINK_LEN,
                  "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
        "maxItems": MAX_LINKS,
        "description": "Social links: http(s) URLs; on the public card only with show_links",
    },
    "location": {
        "type": ["string", "null"], "maxLength": MAX_LOCATION,
        "description": "A coarse place (city, country); on the card only with show_location",
    },
    "show_links": {"type": "boolean", "description": "Show links on the card (default false)"},
    "show_location": {"type": "boolean",
                      "description": "Show location on the card (default false)"},
    "name": {
        "type": ["string", "null"], "minLength": 1, "maxLength": NAME_MAX,
        "description": "Display name (optional; sealed at rest); shown to the owner, "
                       "never in the public card",
    },
    "email": {
        "type": ["string", "null"], "format": "email", "maxLength": EMAIL_MAX,
        "description": "E-mail address (optional; sealed at rest, unique). Setting or "
                       "changing it mails a 6-digit code (POST .../email/verify) and "
                       "resets email_verified. Changing it needs `current_password` "
                       "or a fresh sign-in. Never shown to others.",
    },
}

ENDPOINTS = Endpoints(schemas={
    "ProfileCreate": {
        "type": "object",
        "required": ["username", "date_of_birth"],
        "additionalProperties": False,
        "properties": {
            **_PROFILE_PROPS,
            "password": {
                "type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX,
                "description": "Optional; stored only as an Argon2id hash",
            },
            "policy_version": {
                "type": "string", "maxLength": POLICY_VERSION_MAX,
                "description": "The policy version accepted (GET /policy); default: "
                               "the current one",
            },
        },
    },
    "ProfileUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {**_PROFILE_PROPS, "current_password": CURRENT_PASSWORD},
    },
    "Profile": {
        "type": "object",
        "required": [
            "id", "username", "date_of_birth", "bio", "interests", "language", "created_at",
        ],
        "properties": {
            "id": {"type": "string"},
            **_PROFILE_PROPS,
            "opted_out": {"type": "boolean"},
            "has_password": {"type": "boolean"},
            "two_factor": {"type": "boolean", "description": "TOTP two-factor is on"},
            "email_verified": {"type": "boolean"},
            "policy_accepted": {"type": ["string", "null"],
                                "description": "The policy version the owner accepted"},
            "policy_current": {"type": ["string", "null"],
                               "description": "The current policy version (ask the "
                                              "owner to accept it when it differs)"},
            "photo_url": {
                "type": ["string", "null"],
                "description": "The owner's photo URL (GET with the token), or null",
            },
            "created_at": TIME,
            "updated_at": TIME,
            "last_seen_at": TIME,
            "moderator": {"type": "boolean",
                          "description": "GET only: the operator made this account a "
                                         "moderator (the page shows the moderation desk)"},
            "restricted": {"type": "boolean",
                           "description": "A restriction request stands: stored only "
                                          "(DELETE .../restriction lifts it)"},
            "objections": {"type": "array",
                           "items": {"type": "string", "enum": list(OBJECTION_PURPOSES)},
                           "description": "Purposes objected to (DELETE "
                                          ".../objections/{purpose} lifts one)"},
        },
    },
    "CreatedProfile": {
        "allOf": [
            {"$ref": "#/components/schemas/Profile"},
            {
                "type": "object",
                "required": ["token"],
                "properties": {
                    "token": {
                        "type": "string",
                        "description": "Bearer token; shown once, stored hashed. "
                                       "With a password it is a session (it expires "
                                       "after --session-ttl; a password change ends "
                                       "it); without one it is the account's only "
                                       "key and does not expire (setting a password "
                                       "later turns it into a session).",
                    }
                },
            },
        ]
    },
})
_ONE = (ID_PARAM, GPC_PARAM)


@ENDPOINTS.operation("POST", "/profiles", {
    "operationId": "create_profile",
    "summary": "Create a profile; the response carries its bearer token",
    "parameters": [GPC_PARAM],
    "requestBody": json_body("ProfileCreate"),
    "responses": {
        "201": json_response("CreatedProfile", "Created"),
        **BODY_ERRORS,
        "409": error("Username or e-mail taken (`conflict`, `field` names it)"),
        **rate_limited("create_account"),
    },
})
async def create_profile(request: Request, ctx: ApiContext) -> Response:
    ctx.limit(request, "create_account")
    fields = profile_fields(await read_json(request), ("username", "date_of_birth"), creating=True)
    if "password" in fields:
        async with ctx.creating:
            profile, token = await ctx.call(ctx.store.create_profile, **fields)
    else:
        profile, token = await ctx.call(ctx.store.create_profile, **fields)
    if request.headers.get("sec-gpc", "").strip() == "1":
        await ctx.call(ctx.store.record_opt_out, profile.id, "gpc")
        profile = await ctx.call(ctx.store.get_profile, profile.id)
    body = {**profile_json(profile, await owner_contact(request, ctx, profile)),
            "token": token}
    return JSONResponse(
        body, status_code=201, headers={"Location": f"{PREFIX}/profiles/{profile.id}"}
    )


@ENDPOINTS.operation("GET", "/profiles/{id}", {
    "operationId": "get_profile",
    "summary": "Read your own profile",
    "security": BEARER,
    "responses": {"200": json_response("Profile", "The profile"), **AUTH_ERRORS, **NOT_FOUND},
}, _ONE)
async def get_profile(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = profile_json(profile, await owner_contact(request, ctx, profile))
    body["moderator"] = await ctx.call(ctx.store.is_moderator, profile.id)
    return JSONResponse(body)


@ENDPOINTS.operation("PATCH", "/profiles/{id}", {
    "operationId": "update_profile",
    "summary": "Correct or change your profile (any subset of the fields)",
    "security": BEARER,
    "requestBody": json_body("ProfileUpdate"),
    "responses": {
        "200": json_response("Profile", "The updated profile"),
        **AUTH_ERRORS,
        **NOT_FOUND,
        **BODY_ERRORS,
        "409": error("Username or e-mail taken (`conflict`, `field` names it)"),
        "429": error("Too many wrong `current_password` tries "
                     "(`too_many_attempts`, Retry-After)"),
    },
}, _ONE)
async def patch_profile(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    body = await read_json(request)
    password = body.pop("current_password", None)
    fields = profile_fields(body, ())
    if IDENTIFYING.intersection(fields):
        await ctx.recent_auth(profile, request, password)
    if fields:
        profile = await ctx.call(ctx.store.update_profile, profile.id, **fields)
    return JSONResponse(profile_json(profile, await owner_contact(request, ctx, profile)))


@ENDPOINTS.operation("DELETE", "/profiles/{id}", {
    "operationId": "delete_profile",
    "summary": "Delete your profile, tokens and chat history now",
    "description": "Under a legal hold nothing is deleted yet: a deletion request is "
                   "opened instead (202, Location), completed once the hold is released.",
    "security": BEARER,
    "responses": {"204": {"description": "Deleted"},
                  "202": {"description": "Held: the deletion waits (see Location)"},
                  **AUTH_ERRORS, **NOT_FOUND},
}, _ONE)
async def delete_profile(request: Request, ctx: ApiContext) -> Response:
    profile = await ctx.authenticate_owner(request)
    waiting = await ctx.call(ctx.store.delete_user, profile.id)
    if waiting is not None:
        return Response(status_code=202,
                        headers={"Location": f"{PREFIX}/privacy-requests/{waiting}"})
    return Response(status_code=204)
