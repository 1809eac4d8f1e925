"""One statement text for both backends: the store's modules name SQLite statements; on PostgreSQL each
is swapped for its twin of the same name (shared_store/postgres/statements*.py), or, where the two
dialects differ only in spelling, respelled here mechanically:

- placeholders: `?` -> `%s`, `?NNN` -> `%(pNNN)s` (positional values become a dict), `:name` ->
  `%(name)s`, a literal `%` -> `%%` (psycopg's escape);
- `INSERT OR IGNORE INTO t ...` -> `INSERT INTO t ... ON CONFLICT DO NOTHING`;
- SQLite's scalar `MIN(a, b)` / `MAX(a, b)` -> `LEAST` / `GREATEST` (one argument stays an aggregate);
- `json_each(x)` (read as `value`) -> `json_array_elements_text(CAST(x AS json))`; `instr` -> `strpos`;
- `a IS b` / `a IS NOT b` -> `IS NOT DISTINCT FROM` / `IS DISTINCT FROM`;
- `INDEXED BY name` and the unary `+column` (SQLite planner hints) are dropped;
- a parameter tested `IS NULL` is cast to text (PostgreSQL cannot type a bare NULL parameter).

Anything whose meaning differs (claims, fences, the change feed, times from the database clock) is a
twin, never a respelling: `twin_of` finds it by the SQLite text's name."""

from __future__ import annotations

import re
import threading
from types import ModuleType

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_INDEXED = re.compile(r"\s+INDEXED BY [A-Za-z_][A-Za-z_0-9]*", re.IGNORECASE)
_IGNORE = re.compile(r"\bINSERT OR IGNORE INTO\b", re.IGNORECASE)
_RETURNING = re.compile(r"\sRETURNING\s", re.IGNORECASE)
# SQLite's `a IS b` / `a IS NOT b` compare any two values; PostgreSQL's IS takes only NULL/TRUE/FALSE.
_IS_NOT = re.compile(r"\bIS NOT (?!NULL\b|TRUE\b|FALSE\b|DISTINCT\b)", re.IGNORECASE)
_IS = re.compile(r"\bIS (?!NOT\b|NULL\b|TRUE\b|FALSE\b|DISTINCT\b)", re.IGNORECASE)
# SQLite's unary `+column` (a planner hint: "not by this column's index") is no operator on text.
_PLAN_HINT = re.compile(r"(\b(?:AND|OR|WHERE|ON|NOT)\s+|\()\+(?=[A-Za-z_])", re.IGNORECASE)
# `? IS NULL` with a None value: PostgreSQL cannot tell the parameter's type ("indeterminate").
_PARAM_IS_NULL = re.compile(r"(%s|%\([A-Za-z_][A-Za-z_0-9]*\)s) IS (NOT )?NULL\b")
_FUNCS = {"json_each": "json_array_elements_text", "instr": "strpos"}

_twins: dict[str, str] = {}
_follow_ups: dict[str, str] = {}
_twins_loaded = False
_cache: dict[str, tuple[str, bool]] = {}
_lock = threading.Lock()


def register_twins(sqlite_module: ModuleType, pg_module: ModuleType) -> None:
    """Map each upper-case statement of `pg_module` to the SQLite statement of the same name in
    `sqlite_module`. A twin without a SQLite statement of its name is a mistake: refused."""
    for name, text in vars(pg_module).items():
        if not name.isupper() or name.startswith("_") or not isinstance(text, str):
            continue
        sqlite_text = getattr(sqlite_module, name, None)
        if sqlite_text is None:
            continue  # a PostgreSQL-only statement (the feed, the fence's lock)
        if not isinstance(sqlite_text, str):
            raise TypeError(f"{sqlite_module.__name__}.{name} is not a statement")
        _twins[sqlite_text] = text


def _load_twins() -> None:
    global _twins_loaded
    if _twins_loaded:
        return
    from . import follow_ups, twins

    twins.register_all()
    _follow_ups.update(follow_ups.follow_ups())
    _twins_loaded = True


def to_pg(sql: str) -> tuple[str, bool]:
    """(PostgreSQL text, whether positional values must become the dict `{p1: ..}`)."""
    hit = _cache.get(sql)
    if hit is not None:
        return hit
    with _lock:
        _load_twins()
        twin = _twins.get(sql)
        result = (twin, False) if twin is not None else respell(sql)
        _cache[sql] = result
    return result


_binary: frozenset[str] | None = None


def binary_results(sql: str) -> bool:
    """Fetch this statement's rows in binary format: its documents (ledger records, run states) are
    bytea, which the text format doubles into hex (measured: a 1,000-record ledger page 6.6-8.5 ms as
    text, 3.4-4.5 ms binary)."""
    global _binary
    if _binary is None:
        from .. import queries as q

        _binary = frozenset(
            {
                q.LEDGER_PAGE,
                q.LEDGER_PAGE_JOINED,
                q.LIST_LEDGER,
                q.LOAD_RUN,
                q.OPEN_RUN,
                q.FIND_COMPLETED_RESULT,
            }
        )
    return sql in _binary


def follow_up(sql: str) -> str | None:
    """The statement to run right after `sql` in its transaction (postgres/follow_ups.py), if any."""
    if not _twins_loaded:
        with _lock:
            _load_twins()
    return _follow_ups.get(sql)


def respell(sql: str) -> tuple[str, bool]:
    """The mechanical translation (see the module's docstring)."""
    text, numbered = _placeholders(sql)
    text = _INDEXED.sub("", text)
    text = _PLAN_HINT.sub(r"\1", text)
    text = _PARAM_IS_NULL.sub(lambda m: f"CAST({m.group(1)} AS text) IS {m.group(2) or ''}NULL", text)
    text = _IS_NOT.sub("IS DISTINCT FROM ", text)
    text = _IS.sub("IS NOT DISTINCT FROM ", text)
    if _IGNORE.search(text):
        text = _IGNORE.sub("INSERT INTO", text)
        returning = _RETURNING.search(text)
        if returning:
            text = f"{text[: returning.start()]} ON CONFLICT DO NOTHING{text[returning.start() :]}"
        else:
            text = f"{text} ON CONFLICT DO NOTHING"
    text = _functions(text)
    return text, numbered


def _placeholders(sql: str) -> tuple[str, bool]:
    out: list[str] = []
    numbered = False
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            end = i + 1
            while end < n:
                if sql[end] == "'":
                    if end + 1 < n and sql[end + 1] == "'":
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
            continue
        if ch == "%":
            out.append("%%")
        elif ch == "?":
            j = i + 1
            while j < n and sql[j].isdigit():
                j += 1
            if j > i + 1:
                out.append(f"%(p{sql[i + 1 : j]})s")
                numbered = True
                i = j
                continue
            out.append("%s")
        elif ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            if i > 0 and sql[i - 1] == ":":
                out.append(ch)
            else:
                word = _WORD.match(sql, i + 1)
                assert word is not None
                out.append(f"%({word.group()})s")
                i = word.end()
                continue
        else:
            out.append(ch)
        i += 1
    return "".join(out), numbered


def _functions(text: str) -> str:
    """MIN/MAX with several arguments -> LEAST/GREATEST; renamed functions (outside strings)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "'":
            end = text.find("'", i + 1)
            end = n - 1 if end < 0 else end
            out.append(text[i : end + 1])
            i = end + 1
            continue
        word = _WORD.match(text, i)
        if word is None:
            out.append(text[i])
            i += 1
            continue
        name = word.group()
        after = word.end()
        if after < n and text[after] == "(" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            lower = name.lower()
            if lower in _FUNCS:
                inner_end = _closing(text, after)
                inner = _functions(text[after + 1 : inner_end])
                if lower == "json_each":
                    out.append(f"{_FUNCS[lower]}(CAST({inner} AS json))")
                else:
                    out.append(f"{_FUNCS[lower]}({inner})")
                i = inner_end + 1
                continue
            if lower in ("min", "max"):
                inner_end = _closing(text, after)
                inner = text[after + 1 : inner_end]
                if _top_level_commas(inner):
                    out.append(f"{'LEAST' if lower == 'min' else 'GREATEST'}({_functions(inner)})")
                    i = inner_end + 1
                    continue
        out.append(name)
        i = after
    return "".join(out)


def _closing(text: str, open_at: int) -> int:
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "'":
            i = text.find("'", i + 1)
            if i < 0:
                break
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced parentheses in {text!r}")


def _top_level_commas(inner: str) -> bool:
    depth = 0
    quoted = False
    for ch in inner:
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False
