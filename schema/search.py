"""search(query, type, first): one query over users, groups, conversations and messages."""
from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from resolvers import search as search_resolvers

if TYPE_CHECKING:
    from schema.conversations import Conversation
    from schema.groups import Group
    from schema.messages import Message
    from schema.users import User

UserType = Annotated["User", strawberry.lazy("schema.users")]
GroupType = Annotated["Group", strawberry.lazy("schema.groups")]
ConversationType = Annotated["Conversation", strawberry.lazy("schema.conversations")]
MessageType = Annotated["Message", strawberry.lazy("schema.messages")]


@strawberry.enum
class SearchType(Enum):
    ALL = "ALL"
    USERS = "USERS"
    GROUPS = "GROUPS"
    CONVERSATIONS = "CONVERSATIONS"
    MESSAGES = "MESSAGES"


@strawberry.type
class MessageSearchHit:
    hit: strawberry.Private[search_resolvers.MessageHit]

    @strawberry.field
    def message(self) -> MessageType:
        from schema.messages import Message

        return Message.from_row(self.hit.message)

    @strawberry.field(description="The matching part of the body with the matched terms wrapped in [[ and ]].")
    def snippet(self) -> str:
        return self.hit.snippet


@strawberry.type
class SearchResults:
    found: strawberry.Private[search_resolvers.Results]

    @strawberry.field
    def users(self) -> list[UserType]:
        from schema.users import User

        return [User.from_row(row) for row in self.found.users]

    @strawberry.field
    def groups(self) -> list[GroupType]:
        from schema.groups import Group

        return [Group.from_row(row) for row in self.found.groups]

    @strawberry.field
    def conversations(self) -> list[ConversationType]:
        from schema.conversations import Conversation

        return [Conversation.from_row(row) for row in self.found.conversations]

    @strawberry.field
    def messages(self) -> list[MessageSearchHit]:
        return [MessageSearchHit(hit=hit) for hit in self.found.messages]


@strawberry.type
class Query:
    @strawberry.field(description="Only what the viewer may see.")
    async def search(
        self, info: strawberry.Info, query: str, type: SearchType | None = SearchType.ALL, first: int | None = 20
    ) -> SearchResults:
        kind = (type or SearchType.ALL).value
        found = await search_resolvers.search(info.context, query, kind, 20 if first is None else first)
        return SearchResults(found=found)
