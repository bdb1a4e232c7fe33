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
import inspect
import sys
import types

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
            frames.append((line, col, code.co_name, None))
        elif code.co_filename in _MODULE_FILES:
            frames.append((tb.tb_lineno, 1, code.co_name, code.co_filename))
        tb = tb.tb_next
    # The place is the innermost line of the workflow file itself; a used module's lines
    # show in the traceback.
    own = [f for f in frames if f[3] is None]
    if not own:
        return 1, 1, None
    shown = frames[-8:]
    lines = ["Traceback (most recent call last, in your file):"]
    if len(frames) > len(shown):
        lines.append(f"  ... {len(frames) - len(shown)} more")
    for line, _col, name, module in shown:
        where, text = ("", source_lines) if module is None else _MODULE_FILES[module]
        lines.append(f"  {where + ' ' if where else ''}line {line}, in {name}")
        if 0 < line <= len(text):
            lines.append("    " + text[line - 1].strip()[:200])
    return own[-1][0], own[-1][1], "\n".join(lines)


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
        "use": _host.use,
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


# --- Used modules (`use(...)`; the Rust side is worker/modules.rs) -----------------------

# filename -> (label, source lines) of every module loaded in this evaluation.
_MODULE_FILES = {}
_PLAIN = (str, int, float, bool, type(None))
_TYPES_HINT = "str, int, float, bool, list[str], dict[str, str], ... or X | None"


def _check_module_tree(tree):
    for node in ast.walk(tree):
        if type(node) is ast.Name and node.id == "use":
            raise Rejected(node, "a used module may not use another module (modules are one level deep)")


def _module_line(exc, filename):
    line = 1
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def load_module(label, filename, source):
    """Evaluates a used module's source in a namespace of its own, under the same checks as
    a workflow file, and returns its exported functions (public, defined in it) by name.
    Anything wrong is a ValueError naming the module and its line."""
    try:
        tree = ast.parse(source, filename=filename, mode="exec")
    except SyntaxError as e:
        raise ValueError(f"{label} line {e.lineno}: syntax error: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ValueError(f"{label}: the module cannot be parsed") from None
    try:
        check(tree)
        _check_module_tree(tree)
    except Rejected as r:
        raise ValueError(f"{label} line {r.line}: {r.message}") from None
    except RecursionError:
        raise ValueError(f"{label}: the module is nested too deeply to check") from None
    try:
        code = compile(tree, filename, "exec", dont_inherit=True)
    except (RecursionError, MemoryError, SyntaxError):
        raise ValueError(f"{label}: the module cannot be compiled") from None
    del tree
    _MODULE_FILES[filename] = (label, source.splitlines())
    namespace = {
        "__builtins__": _builtins(),
        "__name__": "module",
        "Plan": _host.Plan,
        "Step": _host.Step,
        "Trigger": _host.Trigger,
        "SafeOutputs": _host.SafeOutputs,
        "Cache": _host.Cache,
    }
    try:
        exec(code, namespace)
    except (MemoryError, RecursionError):
        raise
    except BaseException as e:  # noqa: BLE001 - a module's failure is the workflow's diagnostic
        raise ValueError(f"{label} line {_module_line(e, filename)}: {_describe(e)}") from None
    functions = {}
    for name, value in namespace.items():
        if name.startswith("_") or type(value) is not types.FunctionType:
            continue
        if value.__code__.co_filename != filename:
            continue
        _check_signature(label, name, value)
        functions[name] = value
    if not functions:
        raise ValueError(f"{label}: the module defines no function to use (a public function, not starting with '_')")
    return functions


def _valid_annotation(annotation, depth=0):
    if depth > 4:
        return False
    if annotation is None or annotation in (str, int, float, bool, list, dict, type(None)):
        return True
    if type(annotation) is types.UnionType:
        return all(_valid_annotation(a, depth + 1) for a in annotation.__args__)
    if type(annotation) is types.GenericAlias:
        args = annotation.__args__
        if annotation.__origin__ is list and len(args) == 1:
            return _valid_annotation(args[0], depth + 1)
        if annotation.__origin__ is dict and len(args) == 2:
            return args[0] is str and _valid_annotation(args[1], depth + 1)
    return False


def _annotation_name(annotation):
    if annotation is None or annotation is type(None):
        return "None"
    if type(annotation) is type:
        return annotation.__name__
    return repr(annotation)


def _check_signature(label, name, function):
    line = function.__code__.co_firstlineno
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValueError(f"{label} line {line}: {name}(): *args and **kwargs are not allowed; declare each parameter with its type")
        if parameter.annotation is parameter.empty:
            raise ValueError(f"{label} line {line}: {name}(): parameter '{parameter.name}' has no type ({_TYPES_HINT})")
        if not _valid_annotation(parameter.annotation):
            raise ValueError(f"{label} line {line}: {name}(): parameter '{parameter.name}' has type {_annotation_name(parameter.annotation)}; a module takes only {_TYPES_HINT}")


def _plain(value, depth=0):
    if type(value) in _PLAIN:
        return True
    if depth > 8:
        return False
    if type(value) is list:
        return all(_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    return False


def _matches(value, annotation):
    kind = type(value)
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return kind is bool
    if annotation is int:
        return kind is int
    if annotation is float:
        return kind is int or kind is float
    if annotation is str:
        return kind is str
    if annotation is list:
        return kind is list and _plain(value)
    if annotation is dict:
        return kind is dict and _plain(value)
    if type(annotation) is types.UnionType:
        return any(_matches(value, a) for a in annotation.__args__)
    if type(annotation) is types.GenericAlias:
        args = annotation.__args__
        if annotation.__origin__ is list:
            return kind is list and all(_matches(v, args[0]) for v in value)
        if annotation.__origin__ is dict:
            return kind is dict and all(type(k) is str and _matches(v, args[1]) for k, v in value.items())
    return False


def _strings(value, found, depth=0):
    if type(value) is str:
        found.add(value)
    elif depth < 8 and type(value) is list:
        for v in value:
            _strings(v, found, depth + 1)
    elif depth < 8 and type(value) is dict:
        for k, v in value.items():
            _strings(k, found, depth + 1)
            _strings(v, found, depth + 1)


def call_function(label, name, function, args, kwargs):
    """Calls a used module's function: the arguments checked against its declared types,
    its result checked to be steps naming only secrets (and an environment) the caller
    passed in as arguments, and declaring no id_tokens: a token is signed for the calling
    repository's run, so it would carry that repository's identity to whatever the
    module's step does with it."""
    signature = inspect.signature(function)
    unknown = [k for k in kwargs if k not in signature.parameters]
    if unknown:
        takes = ", ".join(signature.parameters) or "nothing"
        raise TypeError(f"{label}: {name}() has no parameter '{unknown[0]}' (it takes: {takes})")
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{label}: {name}(): {e}") from None
    for parameter, value in bound.arguments.items():
        annotation = signature.parameters[parameter].annotation
        if not _matches(value, annotation):
            raise TypeError(
                f"{label}: {name}(): parameter '{parameter}' must be {_annotation_name(annotation)}, got {type(value).__name__}"
            )
    passed = set()
    for value in bound.arguments.values():
        _strings(value, passed)
    try:
        result = function(*bound.args, **bound.kwargs)
    except (MemoryError, RecursionError):
        raise
    except BaseException as e:  # noqa: BLE001 - the module's failure, named with its line
        filename = function.__code__.co_filename
        raise ValueError(f"{label} line {_module_line(e, filename)}: {name}(): {_describe(e)}") from None
    steps = [result] if isinstance(result, _host.Step) else result
    if type(steps) not in (list, tuple) or not all(isinstance(s, _host.Step) for s in steps):
        raise TypeError(f"{label}: {name}() must return a Step or a list of Steps, got {type(result).__name__}")
    for step in steps:
        step_id, secrets, environment, id_tokens = _host.step_grants(step)
        if id_tokens:
            raise ValueError(
                f"{label}: {name}() built step '{step_id}' declaring id_tokens ('{id_tokens[0]}'); "
                "a used module's step may not: its token would carry the calling repository's identity, "
                "so only the calling workflow declares id_tokens"
            )
        for secret in secrets:
            if secret not in passed:
                raise ValueError(
                    f"{label}: {name}() built step '{step_id}' naming secret '{secret}', which the caller did not pass; "
                    "a used module names only the secrets its caller passes in as arguments"
                )
        if environment is not None and environment not in passed:
            raise ValueError(
                f"{label}: {name}() built step '{step_id}' in environment '{environment}', which the caller did not pass; "
                "a used module names only the environments its caller passes in as arguments"
            )
    return result
