"""Evaluator worker bootstrap: trusted code that runs one workflow file.

Never visible to workflow code: workflows get a fresh globals dict whose builtins are a
curated dict of real builtins plus the Rust guard functions (`getattr`, `hasattr`,
`__import__`, `print`). Nothing defined here is reachable from there.

`evaluate()` returns either ("ok", plan, None, None, None) or
("error", message, line, col, detail). Layer (a) of the sandbox lives here as the
AST check; the policy it applies comes from the Rust host (`guard.rs`).

Each evaluation runs in its own forked child process that exits afterwards, so nothing
here needs cleaning up between evaluations, and nothing is cached across them.
Messages and details are made valid UTF-8 here (a lone surrogate in an exception message
becomes a backslash escape); the parent escapes and redacts them further.
"""

import ast
import builtins as _real_builtins
import sys

_host = None
_current_path = None
MAX_MESSAGE = 2000

# Node types that a workflow has no use for and that open doors.
_REFUSED_NODES = {
    ast.ClassDef: "class definitions are not allowed in workflow files; use functions and dicts",
    ast.AsyncFunctionDef: "async functions are not allowed in workflow files",
    ast.Await: "await is not allowed in workflow files",
    ast.AsyncFor: "async for is not allowed in workflow files",
    ast.AsyncWith: "async with is not allowed in workflow files",
    ast.With: "with statements are not allowed in workflow files",
}


class Rejected(Exception):
    def __init__(self, node, message):
        super().__init__(message)
        self.line = getattr(node, "lineno", 1) or 1
        self.col = (getattr(node, "col_offset", 0) or 0) + 1
        self.message = message


def install(host):
    """Called once by the worker before lock-down."""
    global _host, _FORBIDDEN
    _host = host
    _FORBIDDEN = frozenset(host.FORBIDDEN_BUILTINS)
    sys.setrecursionlimit(400)


def caller_location():
    """(line, col) of the innermost frame in the file being evaluated, for host objects."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == _current_path:
            return _position(frame.f_code, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return (0, 0)


# Source positions of each code object's instructions, computed once: walking
# co_positions() from the start on every host call made evaluation quadratic in the size of
# workflow(). Keyed by id() with the code object kept alive beside its positions.
_POSITIONS = {}


def _position(code, lasti, fallback_line):
    entry = _POSITIONS.get(id(code))
    if entry is None or entry[0] is not code:
        if len(_POSITIONS) > 4096:
            _POSITIONS.clear()
        entry = (code, list(code.co_positions()))
        _POSITIONS[id(code)] = entry
    positions = entry[1]
    index = lasti // 2
    if not 0 <= index < len(positions):
        return (fallback_line or 0, 1)
    line, _end, col, _end_col = positions[index]
    return (line or fallback_line or 0, (col or 0) + 1)


def _check_identifier(node, name, what):
    if name.startswith("__"):
        raise Rejected(node, f"{what} '{name}' is not allowed in workflow files")


def _check_attribute(node, name):
    if not _host.attribute_allowed(name):
        hint = " (use f-strings instead)" if name in ("format", "format_map") else ""
        raise Rejected(node, f"access to attribute '{name}' is not allowed in workflow files{hint}")


def _check_arguments(node, bound):
    a = node.args
    for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
        if arg is not None:
            _check_identifier(arg, arg.arg, "parameter name")
            bound.add(arg.arg)


def check(tree):
    """Layer (a), compile time: raises Rejected for the first construct the dialect refuses.

    One walk over the tree. A forbidden builtin (`open`, `eval`, ...) is only an error if the
    file never binds that name itself, so uses are collected and judged after the walk.
    """
    allowed_modules = _host.ALLOWED_MODULES
    forbidden = _FORBIDDEN
    bound = set()
    forbidden_uses = []
    for node in ast.walk(tree):
        kind = type(node)
        if kind is ast.Name:
            name = node.id
            if name.startswith("__"):
                _check_identifier(node, name, "name")
            if type(node.ctx) is ast.Load:
                if name in forbidden:
                    forbidden_uses.append(node)
            else:
                bound.add(name)
        elif kind is ast.Attribute:
            _check_attribute(node, node.attr)
            if type(node.ctx) is not ast.Load:
                raise Rejected(node, f"assigning or deleting attribute '{node.attr}' is not allowed in workflow files")
        elif kind in _LEAF_KINDS:
            continue
        elif kind in _REFUSED_NODES:
            raise Rejected(node, _REFUSED_NODES[kind])
        elif kind is ast.FunctionDef:
            _check_identifier(node, node.name, "function name")
            bound.add(node.name)
            _check_arguments(node, bound)
        elif kind is ast.Lambda:
            _check_arguments(node, bound)
        elif kind is ast.keyword:
            if node.arg is not None:
                _check_identifier(node, node.arg, "keyword argument")
        elif kind is ast.Import:
            for alias in node.names:
                _check_module(node, alias.name, allowed_modules)
                _check_identifier(node, alias.asname or "", "import alias")
                bound.add((alias.asname or alias.name).split(".")[0])
        elif kind is ast.ImportFrom:
            if node.level:
                raise Rejected(node, "relative imports are not allowed in workflow files")
            _check_module(node, node.module or "", allowed_modules)
            for alias in node.names:
                if alias.name == "*":
                    raise Rejected(node, "'from ... import *' is not allowed in workflow files")
                if alias.name.startswith("_"):
                    raise Rejected(node, f"importing '{alias.name}' is not allowed in workflow files")
                if node.module != "plue" and not _host.exports(node.module, alias.name):
                    raise Rejected(node, f"cannot import '{alias.name}' from '{node.module}' in a workflow file")
                _check_identifier(node, alias.asname or "", "import alias")
                bound.add(alias.asname or alias.name)
        elif kind is ast.MatchClass:
            for name in node.kwd_attrs:
                _check_attribute(node, name)
        elif kind is ast.Global or kind is ast.Nonlocal:
            for name in node.names:
                _check_identifier(node, name, "name")
        elif kind is ast.ExceptHandler:
            if node.name:
                _check_identifier(node, node.name, "name")
                bound.add(node.name)
        elif kind is ast.MatchAs or kind is ast.MatchStar:
            if node.name:
                bound.add(node.name)
        elif kind is ast.MatchMapping:
            if node.rest:
                bound.add(node.rest)
    for node in forbidden_uses:
        if node.id not in bound:
            raise Rejected(node, f"use of forbidden name '{node.id}' in a workflow file")


# Node kinds that carry nothing the check looks at: skipped at once.
_LEAF_KINDS = frozenset(
    {ast.Constant, ast.Load, ast.Store, ast.Del, ast.Call, ast.Expr, ast.Return, ast.List, ast.Dict, ast.Tuple,
     ast.BinOp, ast.Add, ast.Mult, ast.Sub, ast.Compare, ast.Eq, ast.JoinedStr, ast.FormattedValue, ast.arguments,
     ast.arg, ast.Assign, ast.Subscript, ast.If, ast.For, ast.comprehension, ast.ListComp, ast.GeneratorExp,
     ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Module}
)
_FORBIDDEN = frozenset()


def _check_module(node, name, allowed_modules):
    if name not in allowed_modules:
        allowed = ", ".join(_host.ALLOWED_MODULES)
        raise Rejected(node, f"import of '{name}' is not allowed in workflow files (allowed: {allowed})")


def _builtins():
    safe = {name: getattr(_real_builtins, name) for name in _host.SAFE_BUILTINS}
    safe.update(getattr=_host.getattr, hasattr=_host.hasattr, print=_host.print, __import__=_host.__import__)
    return safe


def _utf8(text):
    """`text` with lone surrogates (which UTF-8 cannot carry) written as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error(message, line=1, col=1, detail=None):
    message = _utf8(str(message))
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    if detail is not None:
        detail = _utf8(detail)
    return ("error", message, int(line or 1), int(col or 1), detail)


def _user_frames(exc, path, source_lines):
    """(line, col) of the innermost frame in the user's file and a short traceback."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == path:
            line, col = _position(code, tb.tb_lasti, tb.tb_lineno)
            frames.append((line, col, code.co_name))
        tb = tb.tb_next
    if not frames:
        return 1, 1, None
    shown = frames[-8:]
    lines = ["Traceback (most recent call last, in your file):"]
    if len(frames) > len(shown):
        lines.append(f"  ... {len(frames) - len(shown)} more")
    for line, _col, name in shown:
        lines.append(f"  line {line}, in {name}")
        if 0 < line <= len(source_lines):
            lines.append("    " + source_lines[line - 1].strip()[:200])
    return shown[-1][0], shown[-1][1], "\n".join(lines)


def _describe(exc):
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - a user exception's __str__ may fail or lie
        text = "<the exception's message could not be read>"
    if not isinstance(text, str):
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def evaluate(path, source, ctx, memory_text):
    global _current_path
    _current_path = path
    if source.startswith("\ufeff"):
        source = source[1:]  # a UTF-8 byte-order mark is valid at the start of a Python file
    try:
        tree = ast.parse(source, filename=path, mode="exec")
    except SyntaxError as e:
        return _error(f"syntax error: {e.msg}", e.lineno, e.offset)
    except (RecursionError, MemoryError):
        return _error("the file is nested too deeply to parse")
    except ValueError as e:
        return _error(f"cannot parse the file: {e}")
    try:
        check(tree)
    except Rejected as r:
        return _error(r.message, r.line, r.col)
    except RecursionError:
        return _error("the file is nested too deeply to check")
    try:
        code = compile(tree, path, "exec", dont_inherit=True)
    except (RecursionError, MemoryError):
        return _error("the file is nested too deeply to compile")
    except SyntaxError as e:
        return _error(f"syntax error: {e.msg}", e.lineno, e.offset)
    del tree
    return _run(path, source, code, ctx, memory_text)


def _run(path, source, code, ctx, memory_text):
    source_lines = source.splitlines()
    namespace = {
        "__builtins__": _builtins(),
        "__name__": "workflow",
        "Plan": _host.Plan,
        "Step": _host.Step,
        "Trigger": _host.Trigger,
        "SafeOutputs": _host.SafeOutputs,
        "Cache": _host.Cache,
    }
    try:
        exec(code, namespace)
        workflow = namespace.get("workflow")
        if workflow is None:
            return _error("no workflow() function: define `def workflow(ctx):` returning a Plan")
        fn_code = getattr(workflow, "__code__", None)
        if fn_code is None or fn_code.co_filename != path:
            return _error("`workflow` must be a function defined in this file")
        line = fn_code.co_firstlineno
        if fn_code.co_argcount == 0:
            result = workflow()
        elif fn_code.co_argcount == 1:
            result = workflow(ctx)
        else:
            return _error("workflow() must take no parameter or one (ctx)", line)
        if not isinstance(result, _host.Plan):
            return _error(f"workflow() must return a Plan, got {type(result).__name__}", line)
        return ("ok", result, None, None, None)
    except MemoryError as e:
        line, col, detail = _user_frames(e, path, source_lines)
        return _error(f"the evaluation exceeded its memory limit of {memory_text}", line, col, detail)
    except RecursionError as e:
        line, col, detail = _user_frames(e, path, source_lines)
        return _error("maximum recursion depth exceeded", line, col, detail)
    except BaseException as e:  # noqa: BLE001 - every failure of user code becomes a diagnostic
        line, col, detail = _user_frames(e, path, source_lines)
        return _error(_describe(e), line, col, detail)
