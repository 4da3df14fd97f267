"""Parsed and validated GraphQL documents, cached by query text, and what the fan-out
needs to know about each operation.

- `DocumentCache.get(query)`: parse (with the token limit) and validate with the
  standard rules once per query text (bounded LRU); the operation limits, which depend
  on the variables (`schema.limits.limit_rules`), are checked per operation by the caller.
- `OperationInfo.touched`: every (type, field) the document selects, so a subscription
  can tell whether its payload depends on the viewer (`LiveSource.viewer_fields`);
  `returns` maps each to the type it returns.
- `OperationInfo.key_variables(variables)`: the variables that can change a per-event
  execution. Strawberry resolves a subscription's root field to the event itself, so
  variables used only in the root field's arguments (conversationId, after) do not
  change what a shared execution produces; the others (page sizes inside the
  selection, @include conditions) split groups.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    Node,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    VariableNode,
    Visitor,
    get_named_type,
    parse,
    specified_rules,
    validate,
    visit,
)
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

DOCUMENT_CACHE_SIZE = 512
MAX_CACHED_QUERY_CHARS = 32_768
# What Strawberry validates every document with: the standard rules and its own two.
VALIDATION_RULES = (*specified_rules, MaybeNullValidationRule, OneOfInputValidationRule)

FieldRef = tuple[str, str]  # (GraphQL type name, field name)


@dataclass
class OperationInfo:
    operation: OperationDefinitionNode
    kind: OperationType
    touched: frozenset[FieldRef]  # every (type, field) the document selects
    returns: dict[FieldRef, str]  # touched field -> name of the type it returns (unwrapped)
    root_only: frozenset[str] | None  # variables used only in root-field arguments (None: unknown)

    def key_variables(self, variables: dict[str, Any] | None) -> bytes:
        """The variables that can change a per-event execution, canonically encoded."""
        values = dict(variables or {})
        if self.root_only is not None:
            for name in self.root_only:
                values.pop(name, None)
        return orjson.dumps(values, option=orjson.OPT_SORT_KEYS) if values else b""


@dataclass
class Parsed:
    query: str
    document: DocumentNode | None
    errors: list[GraphQLError]
    operations: dict[str | None, OperationInfo] = field(default_factory=dict)

    def operation(self, name: str | None) -> OperationInfo | None:
        if name is None and len(self.operations) > 1:
            return None
        if name is None:
            return next(iter(self.operations.values()), None)
        return self.operations.get(name)


class _Touched(Visitor):
    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.found: dict[FieldRef, str] = {}

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        parent = self.type_info.get_parent_type()
        if parent is not None:
            returned = self.type_info.get_type()
            self.found[(parent.name, node.name.value)] = (
                get_named_type(returned).name if returned is not None else ""
            )


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.spreads: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.spreads.add(node.name.value)


def _variables_in(nodes: Iterable[Node], fragments: dict[str, FragmentDefinitionNode]) -> set[str]:
    names: set[str] = set()
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        collector = _Variables()
        visit(todo.pop(), collector)
        names |= collector.names
        for spread in collector.spreads - seen:
            seen.add(spread)
            if spread in fragments:
                todo.append(fragments[spread])
    return names


def _analyse(schema: GraphQLSchema, document: DocumentNode) -> dict[str | None, OperationInfo]:
    type_info = TypeInfo(schema)
    touched = _Touched(type_info)
    visit(document, TypeInfoVisitor(type_info, touched))
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    found: dict[str | None, OperationInfo] = {}
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        selections = definition.selection_set.selections
        root_only: frozenset[str] | None = None
        if all(isinstance(s, FieldNode) for s in selections):
            in_args: set[str] = set()
            elsewhere: set[str] = set()
            for sel in selections:
                assert isinstance(sel, FieldNode)
                in_args |= _variables_in(sel.arguments or (), fragments)
                rest: list[Node] = list(sel.directives or ())
                if sel.selection_set is not None:
                    rest.append(sel.selection_set)
                elsewhere |= _variables_in(rest, fragments)
            elsewhere |= _variables_in(definition.directives or (), fragments)
            root_only = frozenset(in_args - elsewhere)
        name = definition.name.value if definition.name else None
        found[name] = OperationInfo(
            definition, definition.operation, frozenset(touched.found), dict(touched.found), root_only
        )
    return found


class DocumentCache:
    """Parsed and validated documents by query text, bounded LRU.

    Validation here is what the document alone decides: `refuse(document)` first (the
    structural refusal HTTP applies before validation, `schema.limits.document_refusal`),
    then graphql-core's standard rules plus Strawberry's own. The operation limits
    (`limit_rules`, which depend on the variables) are checked per operation by the
    caller; they are cheap next to parsing and full validation. Only valid documents of
    at most `MAX_CACHED_QUERY_CHARS` are kept, so invalid or huge texts cannot crowd the
    cache or hold memory.
    """

    def __init__(
        self, schema: GraphQLSchema, *, max_tokens: int | None, size: int = DOCUMENT_CACHE_SIZE,
        refuse: Callable[[DocumentNode], GraphQLError | None] | None = None,
    ) -> None:
        self.schema = schema
        self.max_tokens = max_tokens
        self.size = size
        self.refuse = refuse
        self._entries: OrderedDict[str, Parsed] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, query: str) -> Parsed:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
            self.hits += 1
            return entry
        self.misses += 1
        entry = self._build(query)
        if not entry.errors and len(query) <= MAX_CACHED_QUERY_CHARS:
            self._entries[query] = entry
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry

    def _build(self, query: str) -> Parsed:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError as error:
            return Parsed(query, None, [error])
        if self.refuse is not None:
            refusal = self.refuse(document)
            if refusal is not None:
                return Parsed(query, None, [refusal])
        errors = validate(self.schema, document, VALIDATION_RULES)
        if errors:
            return Parsed(query, document, list(errors))
        return Parsed(query, document, [], _analyse(self.schema, document))
