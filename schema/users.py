"""Accounts: users, sessions, sign-in. (Skeleton: the accounts work fills this in.)"""
from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from sqlalchemy import select

from db import models
from schema import ids


@strawberry.enum
class PresenceStatus(Enum):
    ONLINE = "ONLINE"
    AWAY = "AWAY"
    OFFLINE = "OFFLINE"


@strawberry.type
class User:
    row: strawberry.Private[models.User]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(ids.encode("User", self.row.id))

    @strawberry.field
    def username(self) -> str:
        return self.row.username

    @strawberry.field
    def display_name(self) -> str:
        return self.row.display_name

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field
    def is_admin(self) -> bool:
        return self.row.is_admin

    @classmethod
    def from_row(cls, row: models.User) -> User:
        return cls(row=row)


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: strawberry.Info) -> User:
        viewer = info.context.require_viewer()
        async with info.context.db.session() as session:
            row = (await session.execute(select(models.User).where(models.User.id == viewer.user_id))).scalar_one()
        return User.from_row(row)
