"""Accounts: the User and Session types, sign-in mutations, user lookups.

`User.from_row(row)` is what every domain returns for a user; its presence fields load
through per-request loaders (one visibility query per request, one presence lookup).
`UserConnection.from_page(page)` builds a page of users for any list field.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import strawberry

from db import models
from errors import BadUserInput
from resolvers import accounts
from schema import ids
from schema.pagination import Page, PageInfo, decode_cursor, encode_cursor, page_info, page_request, slice_page


@strawberry.enum
class PresenceStatus(Enum):
    ONLINE = "ONLINE"
    AWAY = "AWAY"
    OFFLINE = "OFFLINE"


@strawberry.type
class User:
    # An ORM row or a light row (db.rows); plain fields are copied by `from_row`, so
    # resolving them takes Strawberry's attribute fast path (a page holds hundreds).
    row: strawberry.Private[Any]
    id: strawberry.ID
    username: str
    display_name: str
    created_at: datetime
    is_admin: bool
    # The signed-in user itself (AuthPayload.user before a token is in use).
    is_self: strawberry.Private[bool] = False

    async def _visible(self, info: strawberry.Info) -> bool:
        if self.is_self:
            return True
        return bool(await info.context.loader(accounts.presence_visible).load(self.row.id))

    @strawberry.field(
        description="Null unless the viewer shares a conversation (a direct one counts, even without messages) or a "
        "group with this user, or is this user. ONLINE while the user has an authenticated socket open and for the "
        "grace period after the last one closes, unless they chose AWAY or OFFLINE."
    )
    async def presence(self, info: strawberry.Info) -> PresenceStatus | None:
        if not await self._visible(info):
            return None
        live = await info.context.loader(accounts.live_presence).load(self.row.id)
        return PresenceStatus(accounts.effective_presence(self.row, live, info.context.settings))

    @strawberry.field
    async def last_seen_at(self, info: strawberry.Info) -> datetime | None:
        if not await self._visible(info):
            return None
        return self.row.last_seen_at

    @classmethod
    def from_row(cls, row: Any, *, is_self: bool = False) -> User:
        return cls(
            row=row, id=strawberry.ID(ids.encode("User", row.id)), username=row.username,
            display_name=row.display_name, created_at=row.created_at, is_admin=row.is_admin, is_self=is_self,
        )


@strawberry.type
class UserEdge:
    cursor: str
    node: User


@strawberry.type
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[models.User], cursor_of: object = None) -> UserConnection:
        """`cursor_of(row) -> str` defaults to the username keyset of `users`."""
        make = cursor_of if callable(cursor_of) else _user_cursor
        return cls(
            edges=[UserEdge(cursor=make(row), node=User.from_row(row)) for row in page.rows],
            page_info=page_info(page, make),
        )


def _user_cursor(row: models.User) -> str:
    return encode_cursor(row.username_key)


@strawberry.type(description="One signed-in device: created by login, renewed by refreshToken, ended by logout or "
                 "revokeSession.")
class Session:
    row: strawberry.Private[models.AuthSession]
    is_current: strawberry.Private[bool]
    idle_seconds: strawberry.Private[int]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("Session", self.row.id))

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field
    def last_active_at(self) -> datetime:
        return self.row.last_active_at

    @strawberry.field
    def expires_at(self) -> datetime:
        """The earlier of the absolute lifetime and the idle lifetime from last activity."""
        return min(self.row.expires_at, self.row.last_active_at + timedelta(seconds=self.idle_seconds))

    @strawberry.field
    def ip_address(self) -> str | None:
        return self.row.ip_address

    @strawberry.field
    def user_agent(self) -> str | None:
        return self.row.user_agent

    @strawberry.field
    def current(self) -> bool:
        return self.is_current

    @classmethod
    def from_row(cls, row: models.AuthSession, *, current: bool, settings: object) -> Session:
        return cls(row=row, is_current=current, idle_seconds=settings.session_idle_ttl_seconds)  # type: ignore[attr-defined]


@strawberry.type
class AuthPayload:
    access_token: str = strawberry.field(
        description="Short-lived JWT for the Authorization header and connection_init."
    )
    access_token_expires_at: datetime
    refresh_token: str = strawberry.field(
        description="Opaque, single-use: each refreshToken call returns a new one; presenting a used one fails with "
        "UNAUTHENTICATED and revokes that session, except within a short grace (a setting, 10 s) where the same new "
        "pair is returned again, so two tabs refreshing at once do not log the user out."
    )
    user: User
    session: Session

    @classmethod
    def from_signed_in(cls, signed: accounts.SignedIn, settings: object) -> AuthPayload:
        pair = signed.pair
        return cls(
            access_token=pair.access_token, access_token_expires_at=pair.access_expires_at,
            refresh_token=pair.refresh_token, user=User.from_row(signed.user, is_self=True),
            session=Session.from_row(pair.session, current=True, settings=settings),
        )


@strawberry.input
class RegisterInput:
    username: str
    password: str
    display_name: str | None = None


@strawberry.input
class LoginInput:
    username: str
    password: str


@strawberry.input
class UpdateProfileInput:
    display_name: str | None = None


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: strawberry.Info) -> User:
        return User.from_row(await accounts.me(info.context), is_self=True)

    @strawberry.field
    async def user(self, info: strawberry.Info, id: strawberry.ID) -> User | None:
        info.context.require_viewer()
        row = await accounts.get_user(info.context, ids.decode("User", id, field="id"))
        return User.from_row(row, is_self=row.id == info.context.viewer.user_id)

    @strawberry.field
    async def users(
        self, info: strawberry.Info, query: str | None = None, first: int | None = 20, after: str | None = None
    ) -> UserConnection:
        ctx = info.context
        ctx.require_viewer()
        request = page_request(first=first, after=after, default=20, maximum=ctx.settings.max_page_size)
        after_key = None
        if after is not None:
            (after_key,) = decode_cursor(after, 1, field="after")
            if not isinstance(after_key, str):
                raise BadUserInput("Malformed cursor", field="after")
        rows = await accounts.search_users(ctx, query, after_key=after_key, limit=request.size + 1)
        return UserConnection.from_page(slice_page(rows, request))

    @strawberry.field
    async def sessions(self, info: strawberry.Info) -> list[Session]:
        viewer, rows = await accounts.sessions(info.context)
        settings = info.context.settings
        return [Session.from_row(row, current=row.id == viewer.session_id, settings=settings) for row in rows]


def _presence_value(status: PresenceStatus) -> str:
    return status.value if isinstance(status, PresenceStatus) else str(status)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def register(self, info: strawberry.Info, input: RegisterInput) -> AuthPayload:
        signed = await accounts.register(info.context, input.username, input.password, input.display_name)
        return AuthPayload.from_signed_in(signed, info.context.settings)

    @strawberry.mutation
    async def login(self, info: strawberry.Info, input: LoginInput) -> AuthPayload:
        signed = await accounts.login(info.context, input.username, input.password)
        return AuthPayload.from_signed_in(signed, info.context.settings)

    @strawberry.mutation
    async def refresh_token(self, info: strawberry.Info, refresh_token: str) -> AuthPayload:
        signed = await accounts.refresh_token(info.context, refresh_token)
        return AuthPayload.from_signed_in(signed, info.context.settings)

    @strawberry.mutation(description="Ends the current session; its access token stops working at once, its live "
                         "subscriptions end.")
    async def logout(self, info: strawberry.Info) -> bool:
        return await accounts.logout(info.context)

    @strawberry.mutation
    async def revoke_session(self, info: strawberry.Info, id: strawberry.ID) -> bool:
        info.context.require_viewer()
        return await accounts.revoke_session(info.context, ids.decode("Session", id, field="id"))

    @strawberry.mutation(description="Returns how many sessions were ended.")
    async def revoke_other_sessions(self, info: strawberry.Info) -> int:
        return await accounts.revoke_other_sessions(info.context)

    @strawberry.mutation(description="Changes the password and ends every other session of the viewer.")
    async def change_password(self, info: strawberry.Info, current_password: str, new_password: str) -> bool:
        return await accounts.change_password(info.context, current_password, new_password)

    @strawberry.mutation
    async def update_profile(self, info: strawberry.Info, input: UpdateProfileInput) -> User:
        return User.from_row(await accounts.update_profile(info.context, input.display_name), is_self=True)

    @strawberry.mutation
    async def set_presence(self, info: strawberry.Info, status: PresenceStatus) -> User:
        return User.from_row(await accounts.set_presence(info.context, _presence_value(status)), is_self=True)
