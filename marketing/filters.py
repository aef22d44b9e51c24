"""The marketer's condition language: ``--where`` filters, rule and model tags, segments.

A condition such as ``spend_365d > 100 and favourite_category in ('dairy', 'bakery')`` is
tokenised and bounded first (length, nesting, number of operators), parsed by sqlglot into a
syntax tree, and every node is checked against a short list: comparisons, ``and``/``or``/
``not``, ``in (...)``, ``between ... and ...``, ``is [not] null``, known column names and
number or text literals. Each comparison is type-checked against the column's kind (a number
column against a number, a text column against quoted text), so ``customer_id = 1020`` is an
error that says to quote the value instead of silently matching nobody.

With ``behaviour=True`` (tags and segments) three functions over the raw history are allowed,
each with any window:

- ``purchased([category|brand|channel|product_id|store_id|payment_method = 'v', ...] [, within_days = N])``:
  orders with a matching purchase line;
- ``spent([... same filters] [, within_days = N])``: net spend of matching lines;
- ``events('type' [, category|channel = 'v'] [, within_days = N])``: events of one type.

A bare function in a boolean position means "at least one" (``not purchased(within_days = 14)``).
Each call becomes a :class:`BehaviourTerm` that :mod:`marketing.behaviour` computes in SQL with
bound parameters; in the tree it is replaced by a column reference. The text is never executed
as SQL and never passed to ``eval``; the tree is evaluated with vectorised pandas operations.
"""

from __future__ import annotations

import decimal
import difflib
import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Tokenizer, TokenType

from features.catalogue import RENAMED_ON
from portrait.errors import PortraitError
from portrait.privacy import is_pii_name

MAX_LENGTH = 20_000
MAX_TOKENS = 4_000
MAX_NESTING = 12
MAX_NOTS = 24
MAX_CONNECTIVES = 256
MAX_IN_VALUES = 1_000
MAX_WINDOW_DAYS = 36_600  # a century: any longer window is a typo


def check_window_days(days: object, error: type[PortraitError] = PortraitError, option: str = "--within-days") -> int:
    """``days`` of a command's window (``option``: a crowd's or a funnel's --within-days, a
    list's --exclude-bought-within): a whole number from 1 to :data:`MAX_WINDOW_DAYS` (a longer
    window starts before the calendar's first day). A value of many digits is shown cut short."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_WINDOW_DAYS:
        shown = repr(days)
        raise error(
            f"{option} must be a whole number of days from 1 to {MAX_WINDOW_DAYS:,}, got "
            f"{shown if len(shown) <= 20 else shown[:20] + '...'} (a positive number of days, at most a century)"
        )
    return days


_COMPARISONS = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}
NUMBER, TEXT = "number", "text"
# A column whose kind the data decides (a customers attribute before the data is read): it
# compares with numbers and text alike, and the data's schema checks it when evaluated.
ANY = "any"
# Behaviour functions: which filters each takes (purchase line columns or event columns).
PURCHASE_FILTERS = ("category", "brand", "channel", "product_id", "store_id", "payment_method")
EVENT_FILTERS = ("category", "channel")
FUNCTIONS = {"purchased": PURCHASE_FILTERS, "spent": PURCHASE_FILTERS, "events": EVENT_FILTERS}


class FilterError(PortraitError):
    """A condition that does not parse, uses something not allowed, or names an unknown column."""


@dataclass(frozen=True)
class BehaviourTerm:
    """One ``purchased``/``spent``/``events`` call: computed per customer in SQL."""

    function: str
    filters: tuple[tuple[str, str], ...] = ()  # (column, value), sorted
    event_type: str | None = None
    within_days: int | None = None  # None: all history before the as-of date

    @property
    def column(self) -> str:
        """A stable column name for the term's value, the same for the same call anywhere."""
        digest = hashlib.sha1(repr((self.function, self.filters, self.event_type, self.within_days)).encode())
        return f"_{self.function}_{digest.hexdigest()[:10]}"

    @property
    def table(self) -> str:
        return "events" if self.function == "events" else "purchases"

    def describe(self) -> str:
        parts = [repr(self.event_type)] if self.event_type else []
        parts += [f"{c} = {v!r}" for c, v in self.filters]
        if self.within_days is not None:
            parts.append(f"within_days = {self.within_days}")
        return f"{self.function}({', '.join(parts)})"


class Schema:
    """The columns a condition may name and their kinds (``number`` or ``text``).

    ``resolve`` optionally recognises names not listed (e.g. per-value feature names that depend
    on the data), returning their kind or None.
    """

    def __init__(
        self,
        kinds: dict[str, str],
        resolve: Callable[[str], str | None] | None = None,
        values: dict[str, tuple[str, ...]] | None = None,
        current: dict[str, tuple[str, ...]] | None = None,
        renamed: dict[str, str] | None = None,
    ):
        """``values``: the only values some text columns can ever hold (the RFM groups): a
        condition naming another is refused with the closest. ``current``: the values some hold
        as of this date (the top categories and 'other'), which move with the data: only a value
        that differs from one of them in case or spaces alone is refused (a typo), not one that
        is not among them today (a saved segment would stop refreshing when the top moves).
        ``renamed``: feature names as written before they were renamed, to their names now
        (:func:`features.catalogue.legacy_names`): a condition saved with one is told the new one."""
        self.kinds = dict(kinds)
        self.renamed = dict(renamed or {})
        self.resolve = resolve
        self.values = dict(values or {})
        self.current = dict(current or {})
        # (column, value) pairs compared with that no row holds today (see check_value): a list
        # may say why it is empty
        self.absent: list[tuple[str, str]] = []

    def check_value(self, column: str, value: str, equality: bool = False) -> None:
        """Refuse a value a column never holds, or one off a current value only in case or
        spaces; ``equality`` (= or in): a current column's value nobody holds today is kept in
        :attr:`absent`."""
        if column in self.values and value not in self.values[column]:
            known = self.values[column]
            close = [v for v in known if _folded(v) == _folded(value)]
            close = close or difflib.get_close_matches(value, list(known), n=3, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FilterError(f"{column} has no value {value!r}{hint} (its values: {list(known)})")
        if column in self.current and value not in self.current[column]:
            same = [v for v in self.current[column] if _folded(v) == _folded(value)]
            if same:
                raise FilterError(f"{column} has no value {value!r}; did you mean {same[0]!r}? (values match exactly)")
            if equality and (column, value) not in self.absent:
                self.absent.append((column, value))

    def kind(self, name: str) -> str | None:
        if name in self.kinds:
            return self.kinds[name]
        return self.resolve(name) if self.resolve else None

    def closest(self, name: str, n: int = 5) -> list[str]:
        close = difflib.get_close_matches(name, list(self.kinds), n=n, cutoff=0.6)
        prefix = name.split("_")[0]
        extra = sorted(c for c in self.kinds if c.startswith(prefix) and c not in close)
        return (close + extra)[:n]

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, **rules) -> Schema:
        """The columns of ``frame`` with their kinds; ``rules``: ``values`` and ``current``."""
        return cls({c: kind_of(frame[c]) for c in frame.columns}, **rules)


def _folded(value: str) -> str:
    return " ".join(value.split()).casefold()


def closest_names(name: str, names: list[str], n: int = 5) -> list[str]:
    """The names closest to ``name``: those equal to it but for case and spacing ("vip" is
    "VIP"), else the nearest by spelling, compared the same way."""
    same = [v for v in names if _folded(v) == _folded(name)]
    if same:
        return same
    folded = {_folded(v): v for v in names}
    return [folded[c] for c in difflib.get_close_matches(_folded(name), list(folded), n=n)]


def kind_of(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return NUMBER
    if pd.api.types.is_numeric_dtype(column) and not isinstance(column.dtype, pd.CategoricalDtype):
        return NUMBER
    return TEXT


@dataclass
class Condition:
    """A checked condition: its tree (behaviour calls replaced by columns), the columns it
    reads, and the behaviour terms to compute before evaluating it."""

    text: str
    tree: exp.Expression
    columns: list[str] = field(default_factory=list)
    terms: list[BehaviourTerm] = field(default_factory=list)

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        return evaluate(self, frame)


def _bound(text: str) -> None:
    """Reject texts whose size or nesting would exhaust the parser before parsing them."""
    if len(text) > MAX_LENGTH:
        raise FilterError(f"the condition is {len(text):,} characters long; at most {MAX_LENGTH:,} are allowed")
    try:
        tokens = Tokenizer().tokenize(text)
    except TokenError as exc:
        # sqlglot says "Error tokenizing '<the text, cut>'"; its cause says what: a quote not
        # closed (line:column, the column counted from 0 and from the text's start, not the line's)
        unclosed = re.match(r"Missing (\S+) from (\d+):(\d+)", str(exc.__cause__ or ""))
        found = (unclosed.group(1), int(unclosed.group(3)) + 1) if unclosed else _unclosed_quote(text)
        if found:  # at the text's end sqlglot fails on an index instead, naming nothing
            quote, column = found
            raise FilterError(
                f"the quote {quote} at character {column} is not closed: "
                f"write text as 'text' (a quote inside it doubled: 'O''Brien')"
            ) from None
        raise FilterError(f"cannot read condition {text[:80]!r}: {str(exc).splitlines()[0]}") from None
    if len(tokens) > MAX_TOKENS:
        raise FilterError(f"the condition has {len(tokens):,} words and symbols; at most {MAX_TOKENS:,} are allowed")
    depth = deepest = nots = connectives = 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            raise FilterError("a condition is one expression; ';' is not allowed")
        if token.comments:  # the parser drops them: "x >= 0 -- and y > 9" would count everyone
            raise FilterError("comments (-- or /* */) are not allowed in a condition: every word of it counts")
        if token.token_type == TokenType.L_PAREN:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif token.token_type == TokenType.NOT:
            nots += 1
        elif token.token_type in (TokenType.AND, TokenType.OR):
            connectives += 1
    if deepest > MAX_NESTING:
        raise FilterError(f"the condition nests parentheses {deepest} deep; at most {MAX_NESTING} levels are allowed")
    if nots > MAX_NOTS:
        raise FilterError(f"the condition has {nots} 'not's; at most {MAX_NOTS} are allowed")
    if connectives > MAX_CONNECTIVES:
        raise FilterError(
            f"the condition joins {connectives} parts with and/or; at most {MAX_CONNECTIVES} are allowed "
            "(for a long list of values use: column in ('a', 'b', ...))"
        )


def _parse_problem(exc: ParseError) -> str:
    """The parser's complaint in a marketer's words: where, and what is missing (sqlglot says
    "Required keyword: 'high' missing for <class '...Between'>" for ``x between 5 and``)."""
    errors = getattr(exc, "errors", None) or []
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    where = f"at {first.get('highlight')!r} (character {first.get('col')})"
    description = str(first.get("description", ""))
    if description.startswith("Required keyword"):
        return f"something is missing {where}"
    return f"{description.rstrip('.')} {where}"


def parse_condition(text: str, schema: Schema, *, behaviour: bool = False) -> Condition:
    """Parse, bound and check a condition; raise :class:`FilterError` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("the condition is empty")
    _bound(text)
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except ParseError as exc:
        raise FilterError(f"cannot parse condition {text!r}: {_parse_problem(exc)}") from None
    except RecursionError:
        raise FilterError("the condition is nested too deeply") from None
    alias = next(iter(tree.find_all(exp.Alias)), None) if not isinstance(tree, exp.Alias) else tree
    if alias is not None:  # "0x10" or "spend 100": two words side by side read as "0 AS x10"
        hexadecimal = re.fullmatch(r"[xXbBoO][0-9a-fA-F_]+", alias.alias or "")
        raise FilterError(
            f"cannot parse condition {text!r}: {alias.this.sql()!r} is followed by {alias.alias!r} with nothing "
            "between them (an operator, a quote or a space too many?)"
            + ("; numbers are written in decimal" if hexadecimal else "")
        )
    checker = _Checker(schema, behaviour, text)
    try:
        tree = checker.boolean(tree)
    except RecursionError:
        raise FilterError("the condition is nested too deeply") from None
    return Condition(text, tree, list(dict.fromkeys(checker.columns)), list(dict.fromkeys(checker.terms)))


def parse_filter(text: str, columns: set[str] | dict[str, str] | Schema) -> Condition:
    """A ``--where`` filter over a table: no behaviour functions. ``columns`` is a
    :class:`Schema`, a mapping of name to kind, or a set of names (kinds then unchecked)."""
    return parse_condition(text, _as_schema(columns))


def _as_schema(columns) -> Schema:
    if isinstance(columns, Schema):
        return columns
    if isinstance(columns, dict):
        return Schema(columns)
    return Schema(dict.fromkeys(columns, None))


def _flatten(node: exp.Expression, kind: type) -> list[exp.Expression]:
    """The operands of a chain of one connective, without recursion (chains are left-deep)."""
    result, stack = [], [node]
    while stack:
        current = stack.pop()
        if isinstance(current, kind):
            stack += [current.right, current.left]
        else:
            result.append(current)
    return result


class _Checker:
    def __init__(self, schema: Schema, behaviour: bool, text: str = ""):
        self.schema = schema
        self.behaviour = behaviour
        self.text = text  # as written: the parser turns operators into functions (@x is abs(x))
        self.columns: list[str] = []
        self.terms: list[BehaviourTerm] = []

    def boolean(self, node: exp.Expression) -> exp.Expression:
        """Check a node in a boolean position; returns it with behaviour calls replaced."""
        if isinstance(node, exp.Paren):
            return exp.Paren(this=self.boolean(node.this))
        if isinstance(node, exp.Not):
            return exp.Not(this=self.boolean(node.this))
        if isinstance(node, exp.And | exp.Or):
            parts = [self.boolean(part) for part in _flatten(node, type(node))]
            joined = parts[0]
            for part in parts[1:]:
                joined = type(node)(this=joined, expression=part)
            return joined
        if isinstance(node, tuple(_COMPARISONS)):
            self.check_booleans(node, node.left, [node.right], equality=isinstance(node, exp.EQ | exp.NEQ))
            self.check_booleans(node, node.right, [node.left], equality=isinstance(node, exp.EQ | exp.NEQ))
            left, left_kind = self.operand(node.left)
            right, right_kind = self.operand(node.right)
            if left_kind == "literal" and right_kind == "literal":
                raise FilterError(f"{node.sql()!r} compares two values; name a column")
            self.same_kind(node, [left, right])
            self.known_values(left, [right], equality=isinstance(node, exp.EQ))
            self.known_values(right, [left], equality=isinstance(node, exp.EQ))
            return type(node)(this=left, expression=right)
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise FilterError("'in' takes a list of values, not a query")
            if len(node.expressions) > MAX_IN_VALUES:
                raise FilterError(f"'in' takes at most {MAX_IN_VALUES:,} values")
            if not node.expressions:  # matches nobody: a list left empty by mistake, said
                raise FilterError("'in ()' is an empty list of values: it matches nobody; give at least one value")
            self.check_booleans(node, node.this, node.expressions, equality=True)
            column, _ = self.operand(node.this, column_only=True)
            values = [self.literal(v) for v in node.expressions]
            self.same_kind(node, [column, *values])
            self.known_values(column, values, equality=True)
            return exp.In(this=column, expressions=values)
        if isinstance(node, exp.Between):
            self.check_booleans(node, node.this, [node.args["low"], node.args["high"]], equality=False)
            column, _ = self.operand(node.this, column_only=True)
            low, high = self.literal(node.args["low"]), self.literal(node.args["high"])
            self.same_kind(node, [column, low, high])
            return exp.Between(this=column, low=low, high=high)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise FilterError(f"{node.sql()!r}: only 'is null' and 'is not null' are allowed")
            column, _ = self.operand(node.this, column_only=True)
            return exp.Is(this=column, expression=exp.Null())
        if self.behaviour and isinstance(node, exp.Anonymous) and node.name.lower() in FUNCTIONS:
            column, _ = self.operand(node)
            return exp.GT(this=column, expression=exp.Literal.number(0))
        if isinstance(node, exp.RegexpLike):  # `~`: no pattern matching, and no function to suggest
            raise FilterError(
                "pattern matching (~, LIKE, regular expressions) is not available in a condition; compare with = "
                "or in ('...', '...')"
            )
        if isinstance(node, exp.Anonymous | exp.Func):
            self.operand(node)  # a function no condition knows says so (never "compare it")
        if isinstance(node, exp.Column | exp.Anonymous | exp.Func):
            raise FilterError(
                f"{node.sql()!r} on its own is not a condition: compare it, e.g. {node.sql()} > 0"
                if isinstance(node, exp.Column)
                else f"{node.sql()!r} on its own is not a condition: compare a column with a value"
            )
        raise FilterError(
            f"{node.sql()!r} is not allowed in a condition: use comparisons (=, !=, <, <=, >, >=), "
            "and/or/not, in (...), between ... and ..., is [not] null"
            + (", purchased(...), spent(...), events(...)" if self.behaviour else "")
            + " on column names and values"
        )

    def operand(self, node: exp.Expression, column_only: bool = False) -> tuple[exp.Expression, str]:
        if isinstance(node, exp.Column):
            if node.table or not isinstance(node.this, exp.Identifier):
                raise FilterError(f"{node.sql()!r}: use a plain column name")
            kind = self.schema.kind(node.name)
            if kind is None and node.name not in self.schema.kinds and node.name in self.schema.renamed:
                raise FilterError(
                    f"unknown column {node.name!r}: since {RENAMED_ON} it is {self.schema.renamed[node.name]!r} "
                    "(features named after a value with accents or letters outside a-z were renamed); "
                    "write the new name in the condition (a saved segment: segment create NAME --replace with it; "
                    "a tag: the tag library's file)"
                )
            if kind is None and node.name not in self.schema.kinds:
                personal = withheld_as_personal(node.name)
                close = [] if personal else self.schema.closest(node.name)
                scored = re.search(r"_(score|percentile|decile)$|^persona_(name|id)$", node.name)
                quoted = node.this.quoted  # "BEEF": double quotes name a column, as in SQL
                raise FilterError(
                    f"unknown column {node.name!r}"
                    + (f"; a text value takes single quotes: '{node.name}'" if quoted else "")
                    + (f"; did you mean one of {close}?" if close and not quoted else "")
                    + (
                        "; a model's output is read from scores that hold it (scored with that model: a command's "
                        "--scores DIR, the server's scores for the API)"
                        if scored
                        else ""
                    )
                    + (
                        "; a customers attribute is a column where the customers table has it (in a list: where "
                        "the scoring model read the attributes family; a segment reads the data set itself: "
                        "segment create NAME --where ..., then list --segment NAME)"
                        if node.name.startswith("attr_") and not close and not personal
                        else ""
                    )
                    + personal
                )
            self.columns.append(node.name)
            return exp.column(node.name), kind or ANY
        if self.behaviour and isinstance(node, exp.Anonymous) and node.name.lower() in FUNCTIONS:
            term = behaviour_term(node)
            self.terms.append(term)
            return exp.column(term.column), NUMBER
        if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
            raise FilterError(  # DATE '...' parsed as a cast: shown as written, not as CAST(... AS DATE)
                f"a date ({node.this.this!r}) is not a value a condition takes: dates are features counting days "
                "before the as-of date (days_since_first_purchase > 365, days_since_last_purchase <= 30)"
            )
        if isinstance(node, exp.Anonymous) and node.name.lower() in FUNCTIONS:  # not self.behaviour
            raise FilterError(
                f"{node.name.lower()}(...) is not available in a list's filter, which reads columns: save a segment "
                "with it (portrait segment create NAME --where ...) and list by it (portrait list --segment NAME)"
            )
        if isinstance(node, exp.Anonymous | exp.Func):
            name = node.name.lower() if isinstance(node, exp.Anonymous) else node.sql_name().lower()
            # the calls written, outside quoted text, other than the keywords and functions a
            # condition takes ("'Home (garden)'" and "purchased(...)" are no unknown function)
            unquoted = re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", self.text)
            allowed = {"in", "and", "or", "not", "between", "is", "exists", *FUNCTIONS}
            written = [
                w.lower() for w in re.findall(r"(?<![\w.])([A-Za-z_]\w*)\s*\(", unquoted) if w.lower() not in allowed
            ]
            if name not in written and written:  # pow(x, 2) is parsed as power(...)
                name = written[0]
            elif not written:
                raise FilterError(  # "@x" or "x ^ 2": not abs(...) or power(...), which were not written
                    "arithmetic and other operators (such as @, ^, **, ::, ->) are not part of a condition; "
                    "compare column names with values (=, !=, <, <=, >, >=, in, between)"
                )
            known = "the functions a condition can use are purchased(...), spent(...) and events(...)"
            raise FilterError(
                f"{name}(...) is not a function a condition can use"
                + (f"; {known}" if self.behaviour else "")
                + "; compare column names with values"
            )
        if column_only:
            what = "a column name" + (" or purchased(...), spent(...), events(...)" if self.behaviour else "")
            raise FilterError(f"{node.sql()!r}: expected {what} before the operator")
        return self.literal(node), "literal"

    def literal(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Literal):
            if not node.is_string:
                _number(node.this, node)
            return node
        if isinstance(node, exp.Boolean):  # 1 or 0 of a yes/no number column (see check_booleans)
            return exp.Literal.number(1 if node.this else 0)
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            _number(node.this.this, node)
            return node
        if isinstance(node, exp.ByteString):  # sqlglot writes none back (it said '' and warned)
            raise FilterError("an escape or byte string (e'...', b'...') is not a value; write text as 'text'")
        if isinstance(node, exp.Null):  # "attr_region = null" matches nobody in SQL: the test is IS NULL
            raise FilterError("NULL is not a value to compare with: write column is null (or is not null)")
        raise FilterError(f"{node.sql()!r} is not a value or a column name")

    def check_booleans(
        self, node: exp.Expression, column: exp.Expression, values: list[exp.Expression], equality: bool
    ) -> None:
        """true and false are 1 and 0 of a yes/no number column, compared with = or <> (or in):
        ordered ("spend_365d > true" counted spend above 1) or beside a text column (a yes/no
        attribute read as text holds 'true') they are refused, saying what to write."""
        word = next(("true" if v.this else "false" for v in values if isinstance(v, exp.Boolean)), None)
        if word is None or not isinstance(column, exp.Column):
            return
        kind = self.schema.kind(column.name)
        if kind == TEXT:
            raise FilterError(f"{node.sql()!r}: {column.name} is text; quote the value: {column.name} = '{word}'")
        if not equality:
            raise FilterError(
                f"{node.sql()!r}: {word} compares only with = or <> (1 or 0 of a yes/no column); "
                "compare a number with a number"
            )

    def known_values(self, column: exp.Expression, values: list[exp.Expression], equality: bool = False) -> None:
        if not isinstance(column, exp.Column):
            return
        for value in values:
            if isinstance(value, exp.Literal) and value.is_string:
                self.schema.check_value(column.name, value.this, equality)

    def same_kind(self, node: exp.Expression, operands: list[exp.Expression]) -> None:
        # a behaviour term (purchased(...), spent(...), events(...)) is a number, named by its call
        terms = {term.column: term.describe() for term in self.terms}

        def kind_of_column(name: str) -> str | None:
            return NUMBER if name in terms else self.schema.kind(name)

        kinds = {}
        for operand in operands:
            if isinstance(operand, exp.Column):
                kind = kind_of_column(operand.name)
                if kind and kind != ANY:
                    kinds.setdefault(kind, operand.name)
            else:
                kinds.setdefault(
                    TEXT if isinstance(operand, exp.Literal) and operand.is_string else NUMBER, operand.sql()
                )
        if len(kinds) > 1:
            column = next((o.name for o in operands if isinstance(o, exp.Column)), None)
            column_kind = kind_of_column(column) if column else None
            hint = (
                f"; quote the value: {column} = '...'"
                if column_kind == TEXT
                else "; compare it with a number (no quotes)"
                if column_kind == NUMBER
                else ""
            )
            named = terms.get(column, column)
            raise FilterError(f"{node.sql()!r} compares text with a number: {named} is {column_kind}{hint}")


def _unclosed_quote(text: str) -> tuple[str, int] | None:
    """The quote (' or ") left open in ``text`` and its position (from 1), a doubled quote
    inside a quoted text being one character of it; None when every quote is closed."""
    opened, at, i = None, 0, 0
    while i < len(text):
        char = text[i]
        if opened is None and char in "'\"":
            opened, at = char, i + 1
        elif char == opened:
            if text[i + 1 : i + 2] == opened:  # 'O''Brien'
                i += 1
            else:
                opened = None
        i += 1
    return (opened, at) if opened else None


def withheld_as_personal(name: str) -> str:
    """For an unknown column: why an attribute named as personal data is none (``attr_email``,
    ``attr_full_name``): its customers column is withheld by its name, never read. Empty for
    any other name."""
    if not name.startswith("attr_") or not is_pii_name(name[len("attr_") :]):
        return ""
    return (
        f"; {name[len('attr_') :]} is personal data by its name: such a customers column is withheld, never "
        "read, and no condition, export or report can name it"
    )


def _whole_as_written(text: str) -> bool:
    """Whether a number's text (``_number`` read it) is a whole number exactly."""
    try:
        written = decimal.Decimal(text.replace(" ", ""))
    except decimal.InvalidOperation:  # a form float reads and Decimal does not: judged as a float
        return True
    return written == written.to_integral_value()


def _number(text: str, node: exp.Expression) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FilterError(f"{node.sql()!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise FilterError(f"{node.sql()!r} is not a finite number")
    return value


def behaviour_term(node: exp.Anonymous) -> BehaviourTerm:
    """Check one behaviour call's arguments: positional event type, keyword filters, window."""
    function = node.name.lower()
    allowed = FUNCTIONS[function]
    filters: dict[str, str] = {}
    event_type = None
    within_days = None
    for position, argument in enumerate(node.expressions):
        if isinstance(argument, exp.EQ) and isinstance(argument.left, exp.Column):
            key = argument.left.name.lower()
            value = argument.right
            if key == "within_days":
                if within_days is not None:  # the last one silently won
                    raise FilterError(f"{node.sql()!r}: within_days is given twice")
                within_days = _window(value, node)
            elif key in allowed:
                if key in filters:
                    raise FilterError(f"{node.sql()!r}: {key} is given twice")
                filters[key] = _text(value, f"{function}(... {key} = ...)")
            elif key == "type" and function == "events":
                if event_type is not None:
                    raise FilterError(f"{node.sql()!r}: the event type is given twice")
                event_type = _text(value, "events(type = ...)")
            else:
                raise FilterError(
                    f"{function}() takes {', '.join(allowed)}"
                    + (" (and the event type first)" if function == "events" else "")
                    + f" and within_days, not {key!r}"
                )
        elif function == "events" and position == 0:
            event_type = _text(argument, "events('type', ...)")
        else:
            raise FilterError(f"{node.sql()!r}: give arguments as name = value, e.g. within_days = 30")
    if function == "events" and not event_type:
        raise FilterError(f"{node.sql()!r}: events() needs an event type first, e.g. events('view', within_days = 14)")
    return BehaviourTerm(
        function,
        tuple(sorted(filters.items())),
        event_type.strip().lower() if event_type else None,
        within_days,
    )


def _text(node: exp.Expression, where: str) -> str:
    if isinstance(node, exp.Literal) and node.is_string:
        if len(node.this) > 200:
            raise FilterError(f"{where}: the value is longer than 200 characters")
        return node.this
    raise FilterError(f"{where}: the value must be quoted text, got {node.sql()!r}")


def _window(node: exp.Expression, call: exp.Expression) -> int:
    if not isinstance(node, exp.Literal | exp.Neg) or (isinstance(node, exp.Literal) and node.is_string):
        raise FilterError(f"{call.sql()!r}: within_days must be a whole number of days")
    value = _number(node.sql(), node)
    # as written, not as a float: 0.99999999999999999999 is 1.0 as a float, and no whole number
    if value != int(value) or not _whole_as_written(node.sql()):
        raise FilterError(f"{call.sql()!r}: within_days must be a whole number of days, got {node.sql()}")
    if value <= 0:
        raise FilterError(f"{call.sql()!r}: within_days must be at least 1 day, got {int(value)}")
    if value > MAX_WINDOW_DAYS:
        raise FilterError(f"{call.sql()!r}: within_days must be at most {MAX_WINDOW_DAYS:,}")
    return int(value)


# ------------------------------------------------------------------ evaluation


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    column = frame[name]
    if kind_of(column) == NUMBER:
        return column.astype("Float64")
    return column.astype("string")


def _value(node: exp.Expression, frame: pd.DataFrame):
    if isinstance(node, exp.Column):
        return _column(frame, node.name)
    if isinstance(node, exp.Neg):
        return -float(node.this.this)
    if node.is_string:
        return node.this
    return float(node.this)


def evaluate(condition: Condition | exp.Expression, frame: pd.DataFrame) -> pd.Series:
    """A boolean mask over ``frame``. Missing values follow SQL: a comparison with a missing
    value is unknown, ``not unknown`` is unknown, and unknown rows do not match. Behaviour
    terms must already be columns of ``frame`` (see :func:`marketing.behaviour.behaviour_table`)."""
    tree = condition.tree if isinstance(condition, Condition) else condition
    try:
        return _evaluate(tree, frame).fillna(False).astype(bool)
    except RecursionError:
        raise FilterError("the condition is nested too deeply") from None


def _evaluate(tree: exp.Expression, frame: pd.DataFrame) -> pd.Series:
    if isinstance(tree, exp.Paren):
        return _evaluate(tree.this, frame)
    if isinstance(tree, exp.Not):
        return ~_evaluate(tree.this, frame)
    if isinstance(tree, exp.And | exp.Or):
        parts = [_evaluate(part, frame) for part in _flatten(tree, type(tree))]
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if isinstance(tree, exp.And) else (result | part)
        return result
    if isinstance(tree, tuple(_COMPARISONS)):
        left, right = _value(tree.left, frame), _value(tree.right, frame)
        try:
            result = _COMPARISONS[type(tree)](left, right)
        except TypeError:
            raise FilterError(f"{tree.sql()!r} compares a number with text") from None
        return pd.Series(result, index=frame.index, dtype="boolean")
    if isinstance(tree, exp.In):
        column = _column(frame, tree.this.name)
        mask = column.isin([_value(v, frame) for v in tree.expressions]).astype("boolean")
        mask[column.isna()] = pd.NA
        return mask
    if isinstance(tree, exp.Between):
        column = _column(frame, tree.this.name)
        low, high = _value(tree.args["low"], frame), _value(tree.args["high"], frame)
        try:
            return ((column >= low) & (column <= high)).astype("boolean")
        except TypeError:
            raise FilterError(f"{tree.sql()!r} compares a number with text") from None
    if isinstance(tree, exp.Is):
        return pd.Series(frame[tree.this.name].isna().to_numpy(), index=frame.index, dtype="boolean")
    raise FilterError(f"cannot evaluate {tree.sql()!r}")


def columns_used(condition: Condition) -> list[str]:
    """The table columns a condition reads (behaviour terms are computed, not read)."""
    return list(condition.columns)


__all__ = [
    "BehaviourTerm",
    "Condition",
    "FilterError",
    "Schema",
    "columns_used",
    "evaluate",
    "parse_condition",
    "parse_filter",
]
