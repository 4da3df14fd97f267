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

Two more memos, same bounds (successes only, texts up to `MAX_QUERY_CHARS`):

- parsing (`on_parse`): the parsed document of a query text (and parse options, i.e.
  the token limit). graphql-core never mutates a DocumentNode, so requests share it;
- the limit rules' verdict: those rules (`schema.limits.limit_rules`) read the document,
  the settings (fixed per schema) and nothing else but the values of the variables
  given to page arguments (`first` / `last`, the cost rule). A pass is remembered per
  (query, the limit rules' names, those values), so `sendMessage`, whose variables
  change on every call but feed no page argument, is checked once per query text.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, parse, specified_rules, validate
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from schema.limits import hashable_value, page_variables

STATIC_RULES = frozenset(specified_rules)
STRAWBERRY_RULES = (MaybeNullValidationRule, OneOfInputValidationRule)  # what validate_document appends
MAX_ENTRIES = 1024
MAX_QUERY_CHARS = 32_768


# (schema id, query, static rules) -> names of the variables given to page arguments
_passed: OrderedDict[tuple[Any, ...], tuple[str, ...]] = OrderedDict()
# (static key, limit rule names, page variable values) -> passed
_limits_passed: OrderedDict[tuple[Any, ...], None] = OrderedDict()
_parsed: OrderedDict[tuple[Any, ...], DocumentNode] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > MAX_ENTRIES:
        cache.popitem(last=False)


class CachedValidation(SchemaExtension):
    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        query = ctx.query
        if ctx.graphql_document is None and isinstance(query, str) and len(query) <= MAX_QUERY_CHARS:
            options = ctx.parse_options
            key = (query, tuple(sorted(options.items()))) if options else (query,)
            document = _parsed.get(key)
            if document is None:
                try:
                    document = parse(query, **options)
                except GraphQLError:
                    document = None  # left unset: Strawberry parses again and reports the error
                else:
                    _remember(_parsed, key, document)
            else:
                _parsed.move_to_end(key)
            ctx.graphql_document = document  # Strawberry parses only when this is unset
        yield

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
            page_vars = _passed.get(key)
            if page_vars is not None:
                _passed.move_to_end(key)
                errors = self._limits(key, page_vars, schema, document, dynamic) if dynamic else []
            else:
                errors = validate(schema, document, (*rules, *STRAWBERRY_RULES))
                if not errors:
                    _remember(_passed, key, page_variables(document))
            ctx.pre_execution_errors = list(errors)  # set (even empty): Strawberry skips its own run
        yield

    def _limits(
        self, key: tuple[Any, ...], page_vars: tuple[str, ...], schema: Any, document: DocumentNode,
        dynamic: tuple[Any, ...],
    ) -> list[Any]:
        variables = self.execution_context.variables or {}
        values = tuple(hashable_value(variables.get(name)) for name in page_vars)
        limits_key = (key, tuple(r.__qualname__ for r in dynamic), values)
        if limits_key in _limits_passed:
            _limits_passed.move_to_end(limits_key)
            return []
        errors = list(validate(schema, document, dynamic))
        if not errors:
            _remember(_limits_passed, limits_key, None)
        return errors
