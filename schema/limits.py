"""Operation limits as graphql-core validation rules, shared by HTTP and WebSocket.

Depth, aliases, directives and a cost estimated from the requested page sizes (depth
and tokens alone do not bound `conversations(first:100){members(first:100)...}`).
`limit_rules(settings, variables)` builds the list once per operation so the cost
rule sees the variables' page sizes; introspection is refused unless enabled.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    VariableNode,
)
from strawberry.extensions import SchemaExtension

PAGE_ARGS = ("first", "last")
# List fields without a page argument, with the most rows they can return.
FIXED_LIST_SIZES = {"readStates": 100, "editHistory": 50, "attachments": 10, "mentions": 50, "sessions": 50}
# Paged fields asked for without first/last return their default page.
DEFAULT_PAGES = {
    "conversations": 20, "users": 20, "groups": 20, "notifications": 20, "search": 20,
    "auditLog": 50, "members": 50, "messages": 50,
}


def _fragments(context: ValidationContext) -> dict[str, FragmentDefinitionNode]:
    return {
        d.name.value: d for d in context.document.definitions if isinstance(d, FragmentDefinitionNode)
    }


def _walk(
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> Iterator[FieldNode]:
    """Fields of a selection set with fragments inlined (cycles are another rule's job)."""
    if selection_set is None:
        return
    for sel in selection_set.selections:
        if isinstance(sel, FieldNode):
            yield sel
        elif isinstance(sel, InlineFragmentNode):
            yield from _walk(sel.selection_set, fragments, seen)
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            if name in seen or name not in fragments:
                continue
            yield from _walk(fragments[name].selection_set, fragments, seen | {name})


def depth_rule(max_depth: int) -> type[ASTValidationRule]:
    class DepthRule(ASTValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = _fragments(self.context)

            def depth(sel: SelectionSetNode | None, level: int) -> int:
                if level > max_depth:
                    return level
                deepest = level
                for field in _walk(sel, fragments):
                    if field.name.value.startswith("__"):
                        continue
                    deepest = max(deepest, depth(field.selection_set, level + 1))
                return deepest

            found = depth(node.selection_set, 0)
            if found > max_depth:
                self.report_error(
                    GraphQLError(f"Query depth exceeds the limit of {max_depth}", node)
                )

    return DepthRule


def alias_rule(max_aliases: int) -> type[ASTValidationRule]:
    class AliasRule(ASTValidationRule):
        count = 0

        def enter_field(self, node: FieldNode, *_: Any) -> None:
            if node.alias is not None:
                self.count += 1
                if self.count == max_aliases + 1:
                    self.report_error(GraphQLError(f"Too many aliases (limit {max_aliases})", node))

    return AliasRule


def directive_rule(max_directives: int) -> type[ASTValidationRule]:
    class DirectiveRule(ASTValidationRule):
        count = 0

        def enter_directive(self, node: Any, *_: Any) -> None:
            self.count += 1
            if self.count == max_directives + 1:
                self.report_error(GraphQLError(f"Too many directives (limit {max_directives})", node))

    return DirectiveRule


def cost_rule(max_cost: int, max_page: int, variables: Mapping[str, Any] | None) -> type[ASTValidationRule]:
    """Cost = rows the operation can produce: each field counts the product of the page
    sizes above it. Unknown sizes (variables not given) count as the maximum page."""
    values = dict(variables or {})

    def size_of(field: FieldNode, default_list: int) -> int:
        name = field.name.value
        for arg in field.arguments or ():
            if arg.name.value in PAGE_ARGS:
                if isinstance(arg.value, IntValueNode):
                    return max(1, int(arg.value.value))
                if isinstance(arg.value, VariableNode):
                    raw = values.get(arg.value.name.value)
                    return raw if isinstance(raw, int) and raw > 0 else max_page
                return max_page
        if name in FIXED_LIST_SIZES:
            return FIXED_LIST_SIZES[name]
        return default_list

    class CostRule(ASTValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = _fragments(self.context)
            total = 0

            def visit(sel: SelectionSetNode | None, multiplier: int) -> None:
                nonlocal total
                for field in _walk(sel, fragments):
                    if total > max_cost:
                        return
                    total += multiplier
                    if field.selection_set is None:
                        continue
                    size = size_of(field, DEFAULT_PAGES.get(field.name.value, 1))
                    visit(field.selection_set, multiplier * max(size, 1))

            visit(node.selection_set, 1)
            if total > max_cost:
                self.report_error(
                    GraphQLError(
                        f"Query cost exceeds the limit of {max_cost}; ask for smaller pages",
                        node,
                    )
                )

    return CostRule


class NoIntrospection(ASTValidationRule):
    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in {"__schema", "__type"}:
            self.report_error(GraphQLError("Introspection is disabled", node))


def limit_rules(settings: Any, variables: Mapping[str, Any] | None) -> list[type[ASTValidationRule]]:
    rules: list[type[ASTValidationRule]] = [
        depth_rule(settings.max_query_depth),
        alias_rule(settings.max_aliases),
        directive_rule(settings.max_directives),
        cost_rule(settings.max_query_cost, settings.max_page_size, variables),
    ]
    if not settings.flag("introspection_enabled"):
        rules.append(NoIntrospection)
    return rules


def operation_limits(settings: Any) -> type[SchemaExtension]:
    """A Strawberry extension adding `limit_rules` with the operation's own variables."""

    class OperationLimits(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            ctx = self.execution_context
            ctx.validation_rules = ctx.validation_rules + tuple(limit_rules(settings, ctx.variables))
            yield

    return OperationLimits
