"""Who may call what: the ``X-API-Key`` header against the keys file's roles.

- With a keys file (``portrait serve --keys FILE``) every route but ``/health`` needs a key of
  the file; ``/docs``, ``/redoc`` and ``/openapi.json`` take a key of any role. A marketing key
  may read lists, segments, tags, crowd reports and profiles without sensitive attributes (nor
  filter lists or drill into report cells by them); an analyst key everything (``POST
  /score``, ``/models``, full profiles).
- Without one, ``PORTRAIT_API_KEY`` is the single key, with the analyst role (its name in the
  audit log is ``api-key``); with neither, anyone on the bound interface is an analyst named
  ``anonymous`` (``portrait serve`` binds beyond localhost only with a key).

A missing or unknown key is 401; a known key whose role may not use the route is 403 naming
the role and the route.
"""

from __future__ import annotations

import secrets

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from portrait.errors import Forbidden, Unauthorized
from portrait.privacy import sensitive_terms
from serving.keys import Caller, KeyRing, Role

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from the keys file (or PORTRAIT_API_KEY)"
)
SINGLE_KEY_NAME = "api-key"
ANONYMOUS = Caller("anonymous", Role.ANALYST)


class Access:
    def __init__(self, keys: KeyRing | None = None, api_key: str | None = None) -> None:
        self.keys = keys
        self.api_key = api_key

    @property
    def open(self) -> bool:
        return self.keys is None and not self.api_key

    def identify(self, key: str | None) -> Caller:
        """The caller the key belongs to; :class:`Unauthorized` without a valid key."""
        if self.keys is not None:
            found = self.keys.caller(key) if key else None
            if found is None:
                raise Unauthorized("missing or wrong X-API-Key")
            return found
        if self.api_key:
            if not (key and secrets.compare_digest(key.encode(), self.api_key.encode())):
                raise Unauthorized("missing or wrong X-API-Key")
            return Caller(SINGLE_KEY_NAME, Role.ANALYST)
        return ANONYMOUS

    # The dependencies are ``async``: a hash and a dictionary look-up, answered on the event
    # loop (a plain ``def`` dependency costs every request a trip through the thread pool).

    async def caller(self, key: str | None = Security(API_KEY_HEADER)) -> Caller:
        """The caller the key belongs to (a FastAPI dependency); 401 without a valid key."""
        return self.identify(key)

    async def analyst(self, request: Request, key: str | None = Security(API_KEY_HEADER)) -> Caller:
        """The caller, who must hold the analyst role (403 otherwise)."""
        caller = self.identify(key)
        if caller.role is not Role.ANALYST:
            route = request.scope.get("route")
            path = getattr(route, "path", request.url.path)
            raise Forbidden(
                f"the key {caller.name!r} has the {caller.role.value} role, which may not use "
                f"{request.method} {path}: it needs an analyst key"
            )
        return caller


def refuse_sensitive_terms(caller: Caller, text: str | None, sensitive: list[str], what: str) -> None:
    """403 when a marketing caller's ``text`` (a filter, a report cell) names one of
    ``sensitive`` (the data set's sensitive attributes, as features or dimensions): a list or a
    drill-down by them would tell each customer's value, which that role may not see."""
    if caller.role is Role.ANALYST:
        return
    named = sensitive_terms(text, sensitive)
    if named:
        raise Forbidden(
            f"the key {caller.name!r} has the {caller.role.value} role, which may not {what} sensitive "
            f"attributes ({', '.join(named)}; [privacy] sensitive_columns of the data set)"
        )
