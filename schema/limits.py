"""Operation limits as graphql-core validation rules, shared by HTTP and WebSocket.

Depth, aliases, directives and a cost estimated from the requested page sizes (depth
and tokens alone do not bound `conversations(first:100){members(first:100)...}`).
`limit_rules(settings, variables)` builds the list once per operation so the cost
rule sees the variables' page sizes; introspection is refused unless enabled.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_operation_ast,
    validate,
)
from graphql.validation.validation_context import ASTValidationContext
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from auth.ratelimit import client_key

PAGE_ARGS = ("first", "last")
# List fields without a page argument, with the most rows they can return.
FIXED_LIST_SIZES = {"readStates": 100, "editHistory": 50, "attachments": 10, "mentions": 50, "sessions": 50}
# Paged fields asked for without first/last return their default page.
DEFAULT_PAGES = {
    "conversations": 20, "users": 20, "groups": 20, "notifications": 20, "search": 20,
    "auditLog": 50, "members": 50, "messages": 50,
}


def _fragments(context: ASTValidationContext) -> dict[str, FragmentDefinitionNode]:
    return {
        d.name.value: d for d in context.document.definitions if isinstance(d, FragmentDefinitionNode)
    }


def depth_rule(max_depth: int) -> type[ASTValidationRule]:
    class DepthRule(ASTValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = _fragments(self.context)
            # Depth of each fragment's selection, computed once: inlining every spread
            # is exponential in "fragment bombs" (F0 spreads F1 twice, F1 spreads F2 twice...).
            memo: dict[str, int] = {}

            def depth(sel: SelectionSetNode | None, visiting: frozenset[str]) -> int:
                """Field levels inside `sel` (0 when empty)."""
                deepest = 0
                for item in sel.selections if sel is not None else ():
                    if isinstance(item, FieldNode):
                        if not item.name.value.startswith("__"):
                            deepest = max(deepest, 1 + depth(item.selection_set, visiting))
                    elif isinstance(item, InlineFragmentNode):
                        deepest = max(deepest, depth(item.selection_set, visiting))
                    elif isinstance(item, FragmentSpreadNode):
                        name = item.name.value
                        if name in visiting or name not in fragments:
                            continue  # cycles and unknown fragments are other rules' errors
                        if name not in memo:
                            memo[name] = depth(fragments[name].selection_set, visiting | {name})
                        deepest = max(deepest, memo[name])
                return deepest

            found = depth(node.selection_set, frozenset())
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
            # A selection's cost scales with its multiplier, so each fragment's cost per
            # row is computed once (inlining every spread is exponential in fragment bombs).
            memo: dict[str, int] = {}

            def unit_cost(sel: SelectionSetNode | None, visiting: frozenset[str]) -> int:
                total = 0
                for item in sel.selections if sel is not None else ():
                    if total > max_cost:
                        break  # costs only grow: the verdict is already known
                    if isinstance(item, FieldNode):
                        total += 1
                        if item.selection_set is not None:
                            size = size_of(item, DEFAULT_PAGES.get(item.name.value, 1))
                            total += max(size, 1) * unit_cost(item.selection_set, visiting)
                    elif isinstance(item, InlineFragmentNode):
                        total += unit_cost(item.selection_set, visiting)
                    elif isinstance(item, FragmentSpreadNode):
                        name = item.name.value
                        if name in visiting or name not in fragments:
                            continue
                        if name not in memo:
                            memo[name] = unit_cost(fragments[name].selection_set, visiting | {name})
                        total += memo[name]
                return total

            total = unit_cost(node.selection_set, frozenset())
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


# Fields repeated under one response name in one selection set (counting the top
# level of fragments spread into it) are merged by GraphQL, so clients rarely repeat
# many. graphql-core's OverlappingFieldsCanBeMerged compares repeats pairwise (and
# recursively): 1,250 copies of `me { id }`, 30 copies of `me` with 30 `id`s each, or
# 400 fragments each selecting `me` fit in 5000 tokens and cost 0.3 to 1.6 s of CPU.
# Documents with more repeats than this in all are refused before validation, by a
# linear, budgeted scan.
MAX_REPEATED_FIELDS = 100
_SCAN_BUDGET = 100_000


def document_refusal(document: DocumentNode) -> GraphQLError | None:
    """Why the document is refused BEFORE graphql-core validation runs, or None.

    Run it on every parsed document before `validate(...)` (the HTTP path does, in
    `operation_limits`; a transport that validates by itself must call it first).

    Each selection set is scanned with its inline fragments and the top level of the
    fragments spread into it (each once); the fragments' nested selections are scanned
    with their own definitions, so fragment bombs stay linear.
    """
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    roots: list[SelectionSetNode] = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))
    ]
    budget = _SCAN_BUDGET
    repeats = 0
    while roots:
        seen_names: set[str] = set()
        spread: set[str] = set()
        pending: list[tuple[SelectionSetNode, bool]] = [(roots.pop(), True)]
        while pending:
            selection_set, own = pending.pop()
            for item in selection_set.selections:
                budget -= 1
                if budget < 0:
                    return GraphQLError("The document is too complex")
                if isinstance(item, FieldNode):
                    name = (item.alias or item.name).value
                    if name in seen_names:
                        repeats += 1
                        if repeats > MAX_REPEATED_FIELDS:
                            return GraphQLError(f"Too many repeated fields (limit {MAX_REPEATED_FIELDS})")
                    seen_names.add(name)
                    if own and item.selection_set is not None:
                        roots.append(item.selection_set)
                elif isinstance(item, InlineFragmentNode):
                    pending.append((item.selection_set, own))
                elif isinstance(item, FragmentSpreadNode):
                    name = item.name.value
                    if name not in spread and name in fragments:
                        spread.add(name)
                        pending.append((fragments[name].selection_set, False))
    return None


def operation_limits(settings: Any) -> type[SchemaExtension]:
    """A Strawberry extension adding `limit_rules` with the operation's own variables."""

    class OperationLimits(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            ctx = self.execution_context
            ctx.validation_rules = ctx.validation_rules + tuple(limit_rules(settings, ctx.variables))
            yield

        def on_validate(self) -> Iterator[None]:
            ctx = self.execution_context
            if ctx.graphql_document is not None and ctx.pre_execution_errors is None:
                refusal = document_refusal(ctx.graphql_document)
                if refusal is not None:  # Strawberry skips validation when errors are already set
                    ctx.pre_execution_errors = [refusal]
            yield

    return OperationLimits


# Root fields whose resolvers spend a rate-limit class of their own (auth, send_message).
SELF_LIMITED_FIELDS = frozenset({"login", "register", "sendMessage"})


def _root_fields(execution_context: Any) -> set[str]:
    """Names of the operation's root fields, each fragment expanded once."""
    document = execution_context.graphql_document
    operation = get_operation_ast(document, execution_context.operation_name) if document else None
    if operation is None:
        return set()
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    names: set[str] = set()
    seen: set[str] = set()
    pending = [operation.selection_set]
    while pending:
        for item in pending.pop().selections:
            if isinstance(item, FieldNode):
                names.add(item.name.value)
            elif isinstance(item, InlineFragmentNode):
                pending.append(item.selection_set)
            elif isinstance(item, FragmentSpreadNode):
                name = item.name.value
                if name not in seen and name in fragments:
                    seen.add(name)
                    pending.append(fragments[name].selection_set)
    return names


class OperationRateLimit(SchemaExtension):
    """One `default`-class hit per query or mutation (per user, per address when
    anonymous), unless every root field is limited by its own resolver. Subscriptions
    are bounded per socket instead, so event deliveries never spend a budget."""

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context.context
        limiter = getattr(getattr(ctx, "services", None), "limiter", None)
        if limiter is not None and limiter.enabled:
            if self.execution_context.operation_type != OperationType.SUBSCRIPTION:
                roots = _root_fields(self.execution_context)
                if not roots or not roots <= SELF_LIMITED_FIELDS:
                    key = client_key(getattr(ctx, "viewer", None), getattr(ctx, "ip_address", None))
                    await limiter.hit("default", key)
        yield


class LimitCache:
    """`limit_rules` verdicts remembered per (query text, page-size variables).

    The limits depend on the document and, for the cost, only on the values of the
    variables used as `first`/`last` arguments. A WebSocket that subscribes with the
    same text as thousands of others (a conversation's messageEvents, each with its
    own conversationId) therefore costs one dictionary lookup instead of building the
    rule classes and visiting the document. Bounded LRU; the introspection flag is part
    of the key (it can differ between settings objects, not within one).
    """

    def __init__(self, settings: Any, size: int = 1024) -> None:
        self.settings = settings
        self.size = size
        self._page_vars: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._verdicts: OrderedDict[tuple[Any, ...], list[GraphQLError]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def errors(
        self, schema: Any, document: DocumentNode, query: str, variables: Mapping[str, Any] | None
    ) -> list[GraphQLError]:
        names = self._page_vars.get(query)
        if names is None:
            names = page_variables(document)
            self._remember(self._page_vars, query, names)
        values = variables or {}
        key = (
            query,
            tuple(hashable_value(values.get(name)) for name in names),
            self.settings.flag("introspection_enabled"),
        )
        found = self._verdicts.get(key)
        if found is not None:
            self._verdicts.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        found = list(validate(schema, document, limit_rules(self.settings, variables)))
        self._remember(self._verdicts, key, found)
        return found

    def _remember(self, store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        if len(key if isinstance(key, str) else key[0]) > MAX_LIMIT_CACHE_QUERY_CHARS:
            return
        store[key] = value
        if len(store) > self.size:
            store.popitem(last=False)


MAX_LIMIT_CACHE_QUERY_CHARS = 32_768


def hashable_value(value: Any) -> Any:
    """A page-size variable's value as a cache key part (ints as they are; anything else
    by its repr with its type, so 1 and "1" differ)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return (type(value).__name__, repr(value))


def page_variables(document: DocumentNode) -> tuple[str, ...]:
    """Names of the variables passed to a `first`/`last` argument anywhere in `document`."""
    names: set[str] = set()
    pending: list[SelectionSetNode] = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))
    ]
    while pending:
        for item in pending.pop().selections:
            if isinstance(item, FieldNode):
                for arg in item.arguments or ():
                    if arg.name.value in PAGE_ARGS and isinstance(arg.value, VariableNode):
                        names.add(arg.value.name.value)
                if item.selection_set is not None:
                    pending.append(item.selection_set)
            elif isinstance(item, InlineFragmentNode):
                pending.append(item.selection_set)
    return tuple(sorted(names))
