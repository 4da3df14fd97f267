"""Group roles and what each may do: the one table every check reads.

Membership of a group IS membership of its conversation (`conversation_members.role`),
so message rules (send, edit own, delete others') live here too and the chat core
asks `can(role, Action.DELETE_OTHERS_MESSAGE)` instead of comparing roles itself.

Two kinds of rule:
- plain actions (`ALLOWED`): who may do it at all;
- actions on another member (`REMOVABLE`, `ASSIGNABLE`): who may act on whom, and
  which roles an actor may hand out.

`role` is None for a non-member. Whether a refusal is FORBIDDEN or NOT_FOUND depends on
whether the viewer can see the group at all (`can_see`); `require*` raise FORBIDDEN and
assume the caller already turned invisible groups into NOT_FOUND.
"""
from __future__ import annotations

from enum import StrEnum

from errors import Forbidden


class Role(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MODERATOR = "MODERATOR"
    MEMBER = "MEMBER"


class Action(StrEnum):
    READ = "read"  # read messages, list members' conversation, subscribe
    SEND = "send"
    EDIT_OWN_MESSAGE = "edit_own_message"
    DELETE_OWN_MESSAGE = "delete_own_message"
    DELETE_OTHERS_MESSAGE = "delete_others_message"
    UPDATE_GROUP = "update_group"
    ADD_MEMBERS = "add_members"
    REMOVE_MEMBER = "remove_member"  # at least one target role; see REMOVABLE
    SET_MEMBER_ROLE = "set_member_role"  # at least one target role; see ASSIGNABLE
    TRANSFER_OWNERSHIP = "transfer_ownership"
    DELETE_GROUP = "delete_group"
    LEAVE = "leave"  # the owner only once no other member remains; see leave_blocked


EVERYONE = frozenset(Role)
NOBODY: frozenset[Role] = frozenset()

# ---- the table ----------------------------------------------------------------------
ALLOWED: dict[Action, frozenset[Role]] = {
    Action.READ: EVERYONE,
    Action.SEND: EVERYONE,
    Action.EDIT_OWN_MESSAGE: EVERYONE,
    Action.DELETE_OWN_MESSAGE: EVERYONE,
    Action.DELETE_OTHERS_MESSAGE: frozenset({Role.OWNER, Role.ADMIN, Role.MODERATOR}),
    Action.UPDATE_GROUP: frozenset({Role.OWNER, Role.ADMIN}),
    Action.ADD_MEMBERS: frozenset({Role.OWNER, Role.ADMIN}),
    Action.REMOVE_MEMBER: frozenset({Role.OWNER, Role.ADMIN, Role.MODERATOR}),
    Action.SET_MEMBER_ROLE: frozenset({Role.OWNER, Role.ADMIN}),
    Action.TRANSFER_OWNERSHIP: frozenset({Role.OWNER}),
    Action.DELETE_GROUP: frozenset({Role.OWNER}),
    Action.LEAVE: EVERYONE,
}

# Whom each role may remove: strictly lower ranks, moderators and up.
REMOVABLE: dict[Role, frozenset[Role]] = {
    Role.OWNER: frozenset({Role.ADMIN, Role.MODERATOR, Role.MEMBER}),
    Role.ADMIN: frozenset({Role.MODERATOR, Role.MEMBER}),
    Role.MODERATOR: frozenset({Role.MEMBER}),
    Role.MEMBER: NOBODY,
}

# Whose role each role may change (targets), and to what (grants). OWNER is never
# granted this way: transferGroupOwnership is the only way to make an owner.
ASSIGNABLE: dict[Role, tuple[frozenset[Role], frozenset[Role]]] = {
    Role.OWNER: (
        frozenset({Role.ADMIN, Role.MODERATOR, Role.MEMBER}),
        frozenset({Role.ADMIN, Role.MODERATOR, Role.MEMBER}),
    ),
    Role.ADMIN: (frozenset({Role.MODERATOR, Role.MEMBER}), frozenset({Role.MODERATOR, Role.MEMBER})),
    Role.MODERATOR: (NOBODY, NOBODY),
    Role.MEMBER: (NOBODY, NOBODY),
}

RANK: dict[Role, int] = {Role.OWNER: 4, Role.ADMIN: 3, Role.MODERATOR: 2, Role.MEMBER: 1}


# ---- questions ----------------------------------------------------------------------
def as_role(value: str | Role | None) -> Role | None:
    """The stored role string as a Role (None for a non-member or a direct conversation)."""
    return None if value is None else Role(value)


def can_see(visibility: str, role: Role | None) -> bool:
    """A public group is visible to everyone signed in; a private one to its members."""
    return visibility == "PUBLIC" or role is not None


def can_join(visibility: str, role: Role | None) -> bool:
    return visibility == "PUBLIC" and role is None


def can(role: Role | None, action: Action) -> bool:
    return role is not None and role in ALLOWED[action]


def can_remove(actor: Role | None, target: Role) -> bool:
    return actor is not None and target in REMOVABLE[actor]


def can_set_role(actor: Role | None, target: Role, new_role: Role) -> bool:
    if actor is None:
        return False
    targets, grants = ASSIGNABLE[actor]
    return target in targets and new_role in grants


def can_delete_message(role: Role | None, *, own: bool) -> bool:
    """deleteMessage: the sender always (while a member), moderators and up for anyone's."""
    return can(role, Action.DELETE_OWN_MESSAGE if own else Action.DELETE_OTHERS_MESSAGE)


def leave_blocked(role: Role | None, member_count: int) -> bool:
    """The owner may not leave while others remain (CONFLICT: transfer ownership first)."""
    return role is Role.OWNER and member_count > 1


# ---- enforcement (FORBIDDEN) ----------------------------------------------------------
def require(role: Role | None, action: Action) -> Role:
    if not can(role, action):
        raise Forbidden(_refusal(role, action))
    assert role is not None
    return role


def require_remove(actor: Role | None, target: Role) -> None:
    if not can_remove(actor, target):
        raise Forbidden(f"A {_name(actor)} cannot remove a {_name(target)}")


def require_set_role(actor: Role | None, target: Role, new_role: Role) -> None:
    if not can_set_role(actor, target, new_role):
        raise Forbidden(f"A {_name(actor)} cannot make a {_name(target)} a {_name(new_role)}")


def _name(role: Role | None) -> str:
    return "non-member" if role is None else role.value.lower()


def _refusal(role: Role | None, action: Action) -> str:
    if role is None:
        return "Only members of this group can do that"
    needed = sorted(ALLOWED[action], key=lambda r: -RANK[r])
    return f"Needs role {' or '.join(r.value for r in needed)}"
