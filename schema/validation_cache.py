"""Validate each query text against the standard rules once, not on every request.

Strawberry validates every request's document with all of graphql-core's
`specified_rules` (plus its own MaybeNull / OneOf rules). For the fan-out benchmark's
`sendMessage` that was ~10 % of the server's CPU, half of the whole GraphQL-over-HTTP
cost of the mutation, for a result that depends only on the query text and the schema.

`CachedValidation` (last in build_schema's extensions, so it runs after
`schema.limits.operation_limits` has added the per-operation limit rules and checked
`document_refusal`) splits the rules in two:

- static rules (`specified_rules` and Strawberry's two): the outcome depends on the
  document alone; a query text that passed them is remembered (bounded LRU; failures
  are never cached, so invalid documents cannot fill it, and texts longer than
  `MAX_QUERY_CHARS` are not cached);
- every other rule (the operation limits, built per request because the cost rule
  reads the variables' page sizes): run on every request, as before.

A document seen before therefore costs one visit with the limit rules instead of one
with ~35 rules. The errors reported for any document are the same as without the cache.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import specified_rules, validate
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

STATIC_RULES = frozenset(specified_rules)
STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)  # what validate_document appends
MAX_ENTRIES = 1024
MAX_QUERY_CHARS = 32_768

_passed: OrderedDict[tuple[Any, ...], None] = OrderedDict()  # (schema id, query, static rules) -> passed


class CachedValidation(SchemaExtension):
    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        query = ctx.query
        document = ctx.graphql_document
        if (
            ctx.pre_execution_errors is None  # refused already (document_refusal): nothing to validate
            and document is not None
            and isinstance(query, str)
            and len(query) <= MAX_QUERY_CHARS
            and ctx.validation_rules
        ):
            rules = ctx.validation_rules
            static = tuple(r for r in rules if r in STATIC_RULES)
            dynamic = tuple(r for r in rules if r not in STATIC_RULES)
            schema = ctx.schema._schema
            key = (id(schema), query, static)
            if key in _passed:
                _passed.move_to_end(key)
                errors = validate(schema, document, dynamic) if dynamic else []
            else:
                errors = validate(schema, document, (*rules, *STRAWBERRY_RULES))
                if not errors:
                    _passed[key] = None
                    if len(_passed) > MAX_ENTRIES:
                        _passed.popitem(last=False)
            ctx.pre_execution_errors = list(errors)  # set (even empty): Strawberry skips its own run
        yield
