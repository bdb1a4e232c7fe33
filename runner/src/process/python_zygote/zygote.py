_BOOT_MAIN = dict(globals()); import sys; _BOOT_MODULES = set(sys.modules)
# This program's code, held: a child ends by returning through the bootstrap's `exec`,
# which would otherwise free it and every constant only it holds (≈ 45 copy-on-write
# faults a step).
_PROGRAM = sys._getframe().f_code
# The warm Python zygote of a Plue runner (see mod.rs beside this file). Started as
# `python3 -u -c BOOTSTRAP <this> [first-cgroup-fd=4] [confine-ahead] [seccomp=<hex>]` (the bootstrap
# compiles and runs this in `__main__`) with its control socket (a SOCK_SEQPACKET
# socketpair end) on fd 3 and, with `first-cgroup-fd=4`, the directory of the first step's
# cgroup on fd 4 (`confine-ahead`: every step runs as a step user, and each spare makes
# its namespaces while it waits; `seccomp=<hex>`: the filter the runner's jobs name, made
# once here), in an empty private directory; it never imports or runs
# user code itself and never sees a step's script, environment or secrets. Each request is
# one packet, `F`, carrying four descriptors (SCM_RIGHTS): the step's stdout and stderr
# write ends, the read end of a pipe holding the step's JSON job, and the read end of the
# `go` pipe; and a fifth where the runner has one, the directory of the cgroup it made for
# the *next* step, which the next spare joins while it waits (a join by `cgroup.procs`
# waits for an RCU grace period after any pause, ~17 ms: off the step's path so). Each is
# served by a child forked ahead of it (a spare, armed at once and then waiting with
# nothing of any step on a socket of its own; the next one is forked as soon as this one
# has its request, while it sets itself up),
# which receives the descriptors, reads the job itself, sets itself up exactly like the
# fresh `python3 -u -c SCRIPT` the runner would spawn (own session, the step's cgroup,
# under a root runner its own mount and IPC namespaces with a private /proc, /tmp,
# /var/tmp, /dev/shm, ... and the attempt's user, directory, descriptors, environment,
# `no_new_privs`, `__main__`, argv, modules), says `OK` (`OK shared <bits>` when the host
# refused it the namespaces), and runs the script only once the runner writes `G` into
# `go` (it closes `go` unwritten when it gave up on the start). The zygote answers
# `P <pid>` (`P <pid> shared <bits>`) once the child is set up (or `E <why>`), then
# `S <wait status>` when it ends.
# Past 600 lines: one program (the runner starts it as a single `-c` text), so the
# ready-made modules, the spares and a child's set-up cannot live in files of their own.
import builtins as _builtins

# What each module imported, in order, while the zygote imported its own modules (below):
# the import graph of the modules a step may take ready-made (see `_WarmFileFinder`). An import
# made while a module loads counts for that module too: an extension module's
# initialisation imports from C, in the frame of the module that imported it.
_IMPORTS = {}
_LOADING = []
_REAL_IMPORT = _builtins.__import__
_bootstrap = sys.modules["_frozen_importlib"]


def _recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = globals.get("__name__") if isinstance(globals, dict) else None
    try:
        target = (_bootstrap._resolve_name(name, _bootstrap._calc___package__(globals), level)
                  if level else name)
    except Exception:
        target = None
    loading = target is not None and target not in sys.modules
    if loading:
        _LOADING.append(target)
        before = len(sys.modules)
    try:
        module = _REAL_IMPORT(name, globals, locals, fromlist, level)
    finally:
        if loading:
            _LOADING.pop()
    if loading:
        _check_touched(target, list(sys.modules)[before:])
    if fromlist:
        base = module.__name__
        wanted = [base] + [base + "." + item for item in fromlist if isinstance(item, str)]
        if "*" in fromlist:
            wanted += [base + "." + item for item in getattr(module, "__all__", ())
                       if isinstance(item, str)]
    else:
        parts = name.split(".")
        wanted = [".".join(parts[:i + 1]) for i in range(len(parts))]
    for by in {importer, _LOADING[-1] if _LOADING else None} - {None}:
        if isinstance(by, str):
            done = _IMPORTS.setdefault(by, [])
            done.extend(n for n in wanted if n in sys.modules and n not in done and n != by)
    return module


# What each module's namespace was when it was last looked at, and by module, the
# modules whose import changed it after its own import had completed (`re` registers with
# `copyreg`): it is served only together with them. `re`'s cache of compiled patterns
# holds only what any compile of the same pattern gives.
_SEEN = {}
_TOUCHED_BY = {}
_MEMOS = {("re", "_cache")}


def _namespace(name):
    module = sys.modules.get(name)
    return {key: (id(value), len(value) if isinstance(value, (dict, list, set)) else None)
            for key, value in getattr(module, "__dict__", {}).items()
            if (name, key) not in _MEMOS and not isinstance(value, type(sys))}


def _check_touched(by, loaded):
    """`by`'s import completed, loading `loaded` (itself last): which of them changed."""
    for name in loaded:
        now = _namespace(name)
        if name != by and name in _SEEN and _SEEN[name] != now:
            _TOUCHED_BY.setdefault(name, set()).add(by)
        _SEEN[name] = now


_builtins.__import__ = _recording_import
import os, json, socket, ctypes, signal, time, atexit, gc, select
_builtins.__import__ = _REAL_IMPORT

# Held here, so the child never imports them from a `sys.path` that starts with the
# step's workspace (a `signal.py` there must not run on an uncaught KeyboardInterrupt).
# `_signal`'s own function, not `signal.signal`'s wrapper (whose enum conversions touch
# dozens of objects, each a copy-on-write fault in a child), and plain ints.
_signal, _kill, _tzset = signal._signal.signal, os.kill, time.tzset
_SIGINT, _SIGTERM, _SIG_DFL, _SIG_IGN = (int(signal.SIGINT), int(signal.SIGTERM),
                                         int(signal.SIG_DFL), int(signal.SIG_IGN))
_SIGKILL = int(signal.SIGKILL)
_select, _monotonic = select.select, time.monotonic
_poll, _POLLPRI = select.poll, select.POLLPRI
_default_int_handler = signal.default_int_handler
_register_exit, _collect, _freeze = atexit.register, gc.collect, gc.freeze

# What Python itself added to its environment at start-up (PEP 538 sets LC_CTYPE when
# coercing the C locale); a fresh interpreter would add it to the step's too.
_COERCED = {k: v for k, v in os.environ.items() if k == "LC_CTYPE"}

_PR_SET_DUMPABLE = 4
_PR_SET_PDEATHSIG = 1
# How long a child may take to set itself up once it has its request (the runner gives
# up, and replaces the zygote, after 10 s).
_SETUP_TIMEOUT = 5.0
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNS, _CLONE_NEWIPC = 0x00020000, 0x08000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC = 2, 4, 8, 16384
_MS_PRIVATE, _MS_SLAVE = 1 << 18, 1 << 19
_MS_REMOUNT, _MS_BIND = 32, 4096
# What a child reports it could not make private (rooms.rs's bits).
_SHARED_MOUNTS, _SHARED_IPC = 1, 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_CONTROL = 3
# The runner's flags (mod.rs's `FIRST_CGROUP_ARG`, `CONFINE_AHEAD_ARG` and `SECCOMP_ARG`),
# each at most once.
_FLAGS = sys.argv[2:]
_SECCOMP_FLAGS = [flag for flag in _FLAGS if flag.startswith("seccomp=")]
if (len(set(_FLAGS)) != len(_FLAGS) or len(_SECCOMP_FLAGS) > 1
        or not set(_FLAGS) - set(_SECCOMP_FLAGS) <= {"first-cgroup-fd=4", "confine-ahead"}):
    raise SystemExit("zygote: unknown arguments %r" % (_FLAGS,))
# The directory of the cgroup made for the first step, which the first spare joins while it
# waits (descriptor 4, when the runner made one).
_FIRST_CGROUP = 4 if "first-cgroup-fd=4" in _FLAGS else None
# Every step of this zygote is confined (runs as a step user of a root runner): each spare
# makes its namespaces while it waits (`_namespaces`), off the step's path.
_CONFINE_AHEAD = "confine-ahead" in _FLAGS
_MAX_JOB = 4 << 20
_scan_json = json._default_decoder.scan_once


# Never served ready-made: modules whose import draws per-process state (a seed, a start
# time, a thread table), registers hooks elsewhere, or that the zygote drives itself.
_NEVER_WARM = frozenset({
    "random", "logging", "tempfile", "threading", "multiprocessing", "concurrent", "asyncio",
    "ctypes", "_ctypes", "uuid", "secrets", "site", "sitecustomize", "usercustomize", "encodings",
    "__main__", "builtins", "sys",
})


def _warm_modules():
    """The modules of the standard library the zygote imported for itself, which a step's
    `import` may take ready-made (`_WarmFileFinder`): by name, the modules its import
    brings into `sys.modules` (itself included), in the order a fresh import completes
    them. Taken once, before any step: every child gets them as the zygote left
    them, and no child's changes reach another (each is a copy-on-write fork)."""
    stdlib = os.path.dirname(os.__file__) + os.sep

    def alone(name):
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if name in _BOOT_MODULES or spec is None or name.split(".")[0] in _NEVER_WARM:
            return False
        if spec.origin == "built-in":
            return True
        return (isinstance(spec.origin, str) and spec.origin.startswith(stdlib)
                and "-packages" not in spec.origin)

    def completed(name, seen, out):
        # A fresh import of `name` loads its package first, then runs its body, whose
        # imports complete in turn; `name` completes last.
        if name in seen or name in _BOOT_MODULES:
            return
        parent = name.rpartition(".")[0]
        if parent:
            completed(parent, seen, out)
            if name in seen:  # its package's own body imported it
                return
        seen.add(name)
        for dep in _IMPORTS.get(name, ()):
            completed(dep, seen, out)
        out.append(name)

    # Changed since (by the zygote's own use of them): never served.
    _check_touched("__main__", list(_SEEN))
    warm = {}
    for name in list(sys.modules):
        if alone(name):
            brought = []
            completed(name, set(), brought)
            if all(alone(dep) and _TOUCHED_BY.get(dep, set()) <= set(brought) for dep in brought):
                warm[name] = tuple(brought)
    return warm


_WARM = _warm_modules()
# Every module some ready-made module's import brings in, by name.
_HELD = {dep: sys.modules[dep] for brought in _WARM.values() for dep in brought}
# What it took to find them is not kept: every fork would carry it.
del _IMPORTS, _LOADING, _SEEN, _TOUCHED_BY
_count_threads = sys.modules["_thread"]._count
_external = sys.modules["_frozen_importlib_external"]
# The directories the ready-made modules were found in (a package in its parent's).
_WARM_DIRS = sorted({
    os.path.dirname(os.path.dirname(spec.origin) if spec.submodule_search_locations is not None
                    else spec.origin)
    for spec in (_HELD[name].__spec__ for name in _WARM)
    if spec.origin != "built-in"
})
# Per ready-made package, its submodules it holds as attributes: a fresh import of the
# package has none of them until each is imported.
_SUBMODULES = {}
for _name, _module in _HELD.items():
    _parent, _, _attr = _name.rpartition(".")
    if _parent in _HELD and getattr(_HELD[_parent], _attr, None) is _module:
        _SUBMODULES.setdefault(_parent, []).append((_attr, _name))
# In the child: the modules served so far (never twice), and the interpreter's own finders.
_served = set()
_META_PATH = ()
# Set while `_found_alike` asks the finders what a fresh import would load.
_probing = False


class _WarmFileFinder(_external.FileFinder):
    """The finder of a directory that holds ready-made modules (`_WARM`), in the step's
    `sys.path_importer_cache` (so `sys.meta_path` and `sys.path_hooks` are a fresh
    interpreter's). It answers as the directory's own finder does, and serves the module the
    zygote imported only when that answer names the very file the zygote loaded (nothing
    earlier on `sys.path` shadowed it), none of the modules its import would bring in is
    loaded yet or was served before in this step (one the step loaded may have been
    changed, and a fresh import would use the change), and each of them resolves, through
    the interpreter's own finders, to the file (or built-in) the zygote loaded. Anything
    else — a workspace module of the same name or of one it imports, a changed `sys.path`
    or `sys.meta_path`, other threads running — takes the ordinary import. The modules the
    import brings in enter `sys.modules` when it loads (`_Served`), as a fresh import would
    put them there; the module keeps its own `__spec__` and `__loader__`."""

    def find_spec(self, fullname, target=None):
        spec = super().find_spec(fullname, target)
        entry = _WARM.get(fullname)
        if (spec is None or entry is None or target is not None or _probing or _count_threads()
                or tuple(sys.meta_path) != _META_PATH):
            return spec
        brought, module = entry, _HELD[fullname]
        if not _alike(spec, module.__spec__) or not _none_loaded(brought):
            return spec
        if not all(_found_alike(dep) for dep in brought if dep != fullname):
            return spec
        own = module.__spec__
        served = type(own)(fullname, _Served(module, own, brought), origin=own.origin,
                           is_package=own.submodule_search_locations is not None)
        served.submodule_search_locations = own.submodule_search_locations
        served.cached, served.has_location = own.cached, own.has_location
        return served


def _found_alike(name):
    """Whether a fresh import of `name` would load what the zygote loaded for it."""
    global _probing
    parent = name.rpartition(".")[0]
    path = None
    if parent:
        package = sys.modules.get(parent, _HELD[parent])
        path = getattr(package, "__path__", None)
        if path is None:
            return False
    _probing = True
    try:
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                return False
            spec = find(name, path)
            if spec is not None:
                return _alike(spec, _HELD[name].__spec__)
        return False
    finally:
        _probing = False


def _none_loaded(brought):
    """Whether the step has neither loaded nor been served any of `brought`."""
    return not any(dep in sys.modules or dep in _served for dep in brought)


def _alike(spec, own):
    return spec.origin == own.origin and _loader_kind(spec.loader) is _loader_kind(own.loader)


def _serve_warm_modules():
    """In the child: the directories' finders that serve the ready-made modules."""
    global _META_PATH
    _META_PATH = tuple(sys.meta_path)
    for directory in _WARM_DIRS:
        current = sys.path_importer_cache.get(directory)
        if type(current) is _external.FileFinder:
            warm = _WarmFileFinder.__new__(_WarmFileFinder)
            warm.__dict__.update(current.__dict__)
            sys.path_importer_cache[directory] = warm


class _Served:
    """The loader of a module `_WarmFileFinder` serves: the module as the zygote left it,
    with the modules its import brings in; anything else is the module's own loader's."""

    def __init__(self, module, spec, brought):
        self.module, self.spec, self.brought = module, spec, brought

    def __getattr__(self, name):
        return getattr(self.spec.loader, name)

    def create_module(self, spec):
        if not _none_loaded(self.brought):
            raise ImportError("module %r changed while it was being found" % spec.name,
                              name=spec.name)
        for dep in self.brought:
            _served.add(dep)
            for attr, sub in _SUBMODULES.get(dep, ()):
                if sub not in self.brought and _HELD[dep].__dict__.get(attr) is _HELD[sub]:
                    del _HELD[dep].__dict__[attr]
        for dep in self.brought:
            if dep != spec.name:
                sys.modules[dep] = _HELD[dep]
        return self.module

    def exec_module(self, module):
        # The import machinery set our spec on it: the module's own comes back.
        module.__spec__ = self.spec


def _loader_kind(loader):
    return loader if isinstance(loader, type) else type(loader)


def _prctl(option, value):
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(%d)" % option)


_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp_program(program_hex):
    """The `sock_fprog` of launch/seccomp.rs's filter from the bytes of its `sock_filter`s,
    and the buffer it points into."""
    code = bytes.fromhex(program_hex)
    if not code or len(code) % 8:
        raise ValueError("the step's seccomp filter is malformed")
    buf = ctypes.create_string_buffer(code, len(code))
    return _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p)), buf


# The filter the runner named at start (`seccomp=<hex>`), made once: a child whose job
# names the same filter installs it without making it again.
_SECCOMP_HEX = _SECCOMP_FLAGS[0][len("seccomp="):] if _SECCOMP_FLAGS else None
_SECCOMP = _seccomp_program(_SECCOMP_HEX) if _SECCOMP_HEX is not None else None
_SECCOMP_ARGS = (ctypes.c_int(_PR_SET_SECCOMP), ctypes.c_ulong(_SECCOMP_MODE_FILTER), None,
                 ctypes.c_ulong(0), ctypes.c_ulong(0))


def _install_seccomp(program_hex):
    """launch/seccomp.rs's filter (keyring calls fail with EPERM), from the bytes of its
    `sock_filter`s the runner sent in the job; after `no_new_privs`, as launch/child.rs."""
    prog, _buf = (_SECCOMP if program_hex == _SECCOMP_HEX and _SECCOMP is not None
                  else _seccomp_program(program_hex))
    option, mode, _, zero, zero2 = _SECCOMP_ARGS
    if _libc.prctl(option, mode, ctypes.byref(prog), zero, zero2) != 0:
        raise OSError(ctypes.get_errno(), "installing the step's seccomp filter")


def _prctl_dumpable(value):
    _prctl(_PR_SET_DUMPABLE, value)


def _read_job(fd):
    chunks, size = [], 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        size += len(chunk)
        if size > _MAX_JOB:
            raise ValueError("job too large")
        chunks.append(chunk)
    os.close(fd)
    # The runner's `serde_json` text (UTF-8, no surrounding blanks), scanned by the json
    # module's own scanner without `json.loads`'s Python around it.
    text = b"".join(chunks).decode("utf-8")
    try:
        job, end = _scan_json(text, 0)
    except StopIteration:
        raise ValueError("the job is not JSON") from None
    if end != len(text) or not isinstance(job, dict):
        raise ValueError("the job is not one JSON object")
    return job


def _namespaces():
    """The part of the runner's `launch` for a fresh step that no job decides: its own
    mount and IPC namespaces where the host allows them, and there a private /proc. The
    mounts are made slaves of the runner's, so nothing mounted here reaches the host while
    what propagates to the runner's mounts arrives here too (until `_confine` makes them
    private, as a fresh step's are from its start). Returns what stayed the host's
    (`_SHARED_*` bits). (≈ 0.25 ms, most of it the two namespaces: the spares of a zygote
    started with `confine-ahead` do it while they wait, `_namespaces_ahead`.)"""
    shared = 0
    unshared = _libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC) == 0
    if not unshared:
        shared |= _SHARED_IPC
        unshared = _libc.unshare(_CLONE_NEWNS) == 0
    # Nothing is mounted unless it cannot propagate back to the host.
    if unshared and _libc.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None) == 0:
        # Best effort: an old kernel without `hidepid=invisible` keeps /proc.
        _libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                    b"hidepid=invisible")
    else:
        shared |= _SHARED_MOUNTS
    return shared


def _namespaces_ahead():
    """`_namespaces`, made by a spare while it waits, with descriptors of the runner's
    mount table and of its mount and IPC namespaces, taken first: `_namespaces_now` makes
    them again at the request where they went stale. None (they are made at the request)
    where the descriptors cannot be had."""
    runners = []
    try:
        for path in ("/proc/self/mountinfo", "/proc/self/ns/mnt", "/proc/self/ns/ipc"):
            runners.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        for fd in runners:
            os.close(fd)
        return None
    return _namespaces(), tuple(runners)


def _namespaces_now(made):
    """At the request, the namespaces `_namespaces_ahead` made, unless they went stale:
    the runner's mount table changed since (a copy sees a later mount or unmount there
    only through propagation, which a private mount does not do; the table's descriptor
    says so, `POLLPRI`), or making them failed (it may not fail now). The spare then goes
    back into the runner's namespaces and makes them anew, as a fresh step would now.
    Returns what stayed the host's; closes the descriptors."""
    shared, (table, mnt, ipc) = made
    try:
        poller = _poll()
        poller.register(table, _POLLPRI)
        if shared or poller.poll(0):
            _enter(mnt, _CLONE_NEWNS, "/proc/self/ns/mnt")
            _enter(ipc, _CLONE_NEWIPC, "/proc/self/ns/ipc")
            shared = _namespaces()
    finally:
        for fd in (table, mnt, ipc):
            os.close(fd)
    return shared


def _enter(fd, kind, own):
    """Into the namespace `fd` names, of `kind`, unless this process is in it already
    (`own`, its `/proc/self/ns` entry): one the spare never left needs no `setns`."""
    there, here = os.fstat(fd), os.stat(own)
    elsewhere = (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino)
    if elsewhere and _libc.setns(fd, kind) != 0:
        raise OSError(ctypes.get_errno(), "returning to the runner's namespaces")


def _confine(user, rooms, shared):
    """The rest of what `launch` does for a fresh step, once `_namespaces` made the
    namespaces (and said `shared`): the mounts private, and there the step's own shared
    places (`_make_rooms`); then the attempt's gid, no supplementary groups, its uid.
    Returns what stayed the host's."""
    if not shared & _SHARED_MOUNTS:
        if _libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0:
            _make_rooms(rooms)
        else:
            shared |= _SHARED_MOUNTS
    os.setgroups([])
    os.setgid(user["gid"])
    os.setuid(user["uid"])
    if os.getuid() != user["uid"] or os.getgid() != user["gid"]:
        raise OSError("could not become the attempt's user")
    return shared


def _mount(source, target, fstype, flags, data):
    if _libc.mount(source, target, fstype, flags, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "mounting the step's %s: %s"
                      % (os.fsdecode(target), os.strerror(errno)))


def _bind_nosuid(source, target, flags):
    _mount(source, target, None, _MS_BIND | _MS_REC, None)
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV | flags, None)


def _make_rooms(rooms):
    """launch/child.rs's `make_rooms`: a fresh tmpfs on each shared place the runner named,
    and the directory it keeps bound back where it was, `nosuid,nodev`."""
    keep = rooms["keep"]
    tmpfs = rooms["tmpfs"].encode()
    for index, place in enumerate(rooms["places"]):
        here = keep is not None and keep["inside"] == index
        # Opened before the tmpfs hides it, never through a link.
        fd = (os.open(keep["path"], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
              if here else -1)
        try:
            _mount(b"tmpfs", os.fsencode(place), b"tmpfs", _MS_NOSUID | _MS_NODEV, tmpfs)
            if here:
                os.mkdir(keep["path"], 0o755)
                _bind_nosuid(b"/proc/self/fd/%d" % fd, os.fsencode(keep["path"]), keep["flags"])
        finally:
            if fd >= 0:
                os.close(fd)
    if keep is not None and keep["inside"] is None:
        path = os.fsencode(keep["path"])
        _bind_nosuid(path, path, keep["flags"])


def _child_setup(fds, ready_w, joined, made):
    """In the forked child, once it has its request (already its own session, see
    `_fork_spare`): everything before user code. Any failure exits the child. `joined` is
    the `cgroup.procs` of the cgroup the spare joined while it waited, if it did: no join
    is needed there. `made` is what `_namespaces_ahead` made while the spare waited (a
    zygote started with `confine-ahead`), else None."""
    # As in a fresh interpreter: the zygote itself ignores these.
    _signal(_SIGINT, _default_int_handler)
    _signal(_SIGTERM, _SIG_DFL)
    job = _read_job(fds[2])
    procs = job.get("cgroup_procs")
    if procs and procs != joined:
        # A failed join is detected by the runner (it checks the child's cgroup).
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError:
            pass
    shared = 0
    if job.get("user") is not None:
        shared = _confine(job["user"], job["rooms"],
                          _namespaces() if made is None else _namespaces_now(made))
    elif made is not None:
        # The runner starts such a zygote only for confined steps: refused, never run in
        # namespaces a fresh interpreter would not have.
        raise ValueError("a job without a step user for a zygote that confines every step")
    # After the mounts (the bound work directory, not the one it hides), as the step's user.
    os.chdir(job["cwd"])
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    keep = sorted({ready_w, fds[3]})
    for fd in (null, fds[0], fds[1]):
        if fd > 2 and fd not in keep:
            os.close(fd)
    os.closerange(3, keep[0])
    if len(keep) > 1:
        os.closerange(keep[0] + 1, keep[1])
    os.closerange(keep[-1] + 1, 65536)
    # A fresh interpreter is dumpable; only the zygote is not.
    _prctl_dumpable(1)
    env = dict(job["env"])
    for key, value in _COERCED.items():
        env.setdefault(key, value)
    _set_environ(env)
    # The C library read no TZ yet in a fresh process; here it has the zygote's.
    _tzset()
    # A fresh interpreter has no parent-death signal (the spare's is for its wait only).
    _prctl(_PR_SET_PDEATHSIG, 0)
    # As every step process: nothing it executes gains privileges (a set-uid file).
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    # As every step process: no kernel keyring (per uid, it would outlive the step).
    _install_seccomp(job["seccomp"])
    return job, shared


def _await_request(link):
    """In a spare child: waits for the four descriptors of the request it is to serve, or
    leaves when the zygote is gone (its end of `link` closed)."""
    while True:
        try:
            msg, anc, _flags, _addr = link.recvmsg(16, socket.CMSG_SPACE(4 * 4))
            break
        except InterruptedError:
            continue
    if not msg:
        os._exit(0)
    link.close()
    return _descriptors(anc)


def _descriptors(anc):
    fds = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - len(data) % 4, 4))
    return fds


def _modules_ready():
    """The spare, while it waits: drops the zygote's own modules from `sys.modules` (the
    zygote's code holds what it uses; `_run_child` drops again whatever came in since,
    usually nothing) and puts the finders that serve the ready-made modules in place
    (`_serve_warm_modules`). (Running the rest of a step's set-up on a made-up job here, to
    take its copy-on-write faults off the step's path, was measured: 166 → 67 faults on
    the path, but W1 9 % slower, its CPU spent beside the steps on two cores.)"""
    _drop_modules()
    _serve_warm_modules()


def _drop_modules():
    """Leaves in `sys.modules` only what a fresh interpreter has there at start."""
    for name in list(sys.modules):
        if name not in _BOOT_MODULES:
            del sys.modules[name]


def _join_ahead(cgroup_fd):
    """In a spare: joins the cgroup whose directory is `cgroup_fd` (and closes it); returns
    its `cgroup.procs` path once the kernel moved this process there, else None (the child
    then joins the cgroup its job names, as without one)."""
    if cgroup_fd is None:
        return None
    try:
        path = os.readlink("/proc/self/fd/%d" % cgroup_fd) + "/cgroup.procs"
        procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=cgroup_fd)
        try:
            os.write(procs, b"0")
        finally:
            os.close(procs)
        return path
    except OSError:
        return None
    finally:
        os.close(cgroup_fd)


def _fork_spare(control, cgroup_fd=None, theirs_r=None):
    """Forks the child the next request will use, before that request arrives: the fork and
    the copy-on-write faults that follow it then happen while the runner and the engine are
    busy elsewhere, not while the step waits. The child holds nothing of any step until it
    receives its request's descriptors over `link` (`theirs_r`, the zygote's end of the
    answer pipe of a child setting itself up meanwhile, it closes at once). Once armed, it
    joins the cgroup whose directory is `cgroup_fd` (the next step's, made by the runner),
    while it waits.
    Returns `(pid, link, ready_r, None)`, and in the child, once it is set up for its
    request, `(0, None, None, job)`."""
    link, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready_r, ready_w = os.pipe()
    # Everything the zygote holds moves to the collector's permanent generation: the
    # child's collections (the one at its exit included) then walk only the objects the
    # step made, instead of writing to every inherited object's header and copying
    # the zygote's whole heap page by page.
    _freeze()
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            # Armed first: it dies with the zygote, stopped or not (SIGKILL), so it never
            # serves a request the runner gave up on; it is its own session (as the step it
            # becomes must be), so the runner's sweep takes it as an orphan if it outlives
            # the zygote all the same; and it holds nothing of the zygote's channel to the
            # runner (a spare kept stopped must not hide the zygote's death from the
            # runner; a received descriptor may take its number later). It then says so:
            # the zygote hands no request to a spare that did not.
            _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
            if os.getppid() != zygote:
                os._exit(0)
            os.setsid()
            control.detach()
            os.close(_CONTROL)
            link.close()
            os.close(ready_r)
            if theirs_r is not None:
                # The answer pipe of the child now setting itself up.
                os.close(theirs_r)
            theirs.send(b"A")
            joined = _join_ahead(cgroup_fd)
            # In the next step's cgroup already where it joined one (as `launch` orders it);
            # a spare without one joins the job's at the request, in these namespaces.
            made = _namespaces_ahead() if _CONFINE_AHEAD else None
            _modules_ready()
            fds = _await_request(theirs)
            if len(fds) != 4:
                raise ValueError("bad request: %d descriptors" % len(fds))
            job, shared = _child_setup(fds, ready_w, joined, made)
            # Said explicitly: a child that dies on the way says nothing, which is no start.
            os.write(ready_w, b"OK shared %d" % shared if shared else b"OK")
            os.close(ready_w)
            # No user code before the runner accepted the start (it closes `go` unwritten
            # when it gave up): a step never runs twice, or unwatched.
            go = os.read(fds[3], 1)
            os.close(fds[3])
            if go != b"G":
                os._exit(0)
        except BaseException as e:
            try:
                os.write(ready_w, ("%s: %s" % (type(e).__name__, e)).encode()[:4000])
            finally:
                os._exit(127)
        return 0, None, None, job
    theirs.close()
    os.close(ready_w)
    return pid, link, ready_r, None


# The step's C environment block: referenced by `environ`, so kept for the process's life.
_ENVIRON = None
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
# The C library's `environ`, resolved once.
_ENVIRON_VAR = ctypes.c_void_p.in_dll(_libc, "environ")


def _block_type(entries):
    """The ctypes array type of an environment block of `entries` and its NULL: `char *`
    times the next multiple of 64 past `entries` (elements past the last entry are NULL).
    Making an array type costs ≈ 70 µs; ctypes keeps each one made, and the zygote makes
    the usual one before any fork."""
    return ctypes.c_char_p * (entries // 64 * 64 + 64)


_block_type(0)


def _set_environ(env):
    """`os.environ.clear(); os.environ.update(env)`, at once: one new C `environ` array
    and one fill of `os.environ`'s mapping, instead of a `setenv` (and the C library's
    reallocation of its array) per variable. Refuses what `os.environ` refuses."""
    global _ENVIRON
    data = {}
    for key, value in env.items():
        # `os.fsencode` of a str, without its Python frames.
        name, text = key.encode(_FS_ENCODING, _FS_ERRORS), value.encode(_FS_ENCODING, _FS_ERRORS)
        if not name or b"=" in name or b"\0" in name or b"\0" in text:
            raise ValueError("illegal environment variable %r" % key)
        data[name] = text
    # From the mapping: two names that encode alike are one variable, as with setenv.
    entries = [name + b"=" + text for name, text in data.items()]
    block = _block_type(len(entries))(*entries)
    _ENVIRON = (entries, block)
    _ENVIRON_VAR.value = ctypes.addressof(block)
    # `os.environb` shares this mapping.
    os.environ._data.clear()
    os.environ._data.update(data)


def _setup_answer(pid, ready_r):
    """What the child `pid` said of its set-up (`OK`, or why it failed), within
    `_SETUP_TIMEOUT`; a child that took longer (a step of the same uid may have stopped
    the spare) is killed and reaped, as is one that failed."""
    chunks, deadline = [], _monotonic() + _SETUP_TIMEOUT
    while True:
        # What is there is read even past the deadline (the zygote may have been held up).
        if not _select([ready_r], [], [], max(deadline - _monotonic(), 0))[0]:
            _kill(pid, _SIGKILL)
            os.waitpid(pid, 0)
            return b"timed out"
        chunk = os.read(ready_r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
        if b"".join(chunks) == b"OK":
            return b"OK"
    said = b"".join(chunks)
    os.waitpid(pid, 0)
    return said


def _hand_over(spare, fds):
    """Gives the request's descriptors to `spare` if it is armed (it said so within a
    second) and alive; else kills and reaps it. Returns whether it took them."""
    pid, link, _ready_r, _ = spare
    try:
        link.settimeout(1.0)
        armed = link.recv(1) == b"A"
        if armed:
            link.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
    except OSError:
        # Gone, or stopped before it armed itself (a same-uid step may signal it).
        armed = False
    link.close()
    if not armed:
        _kill(pid, _SIGKILL)
        os.waitpid(pid, 0)
    return armed


def _serve():
    """Answers requests until the runner goes away; returns a job only in a forked child.
    A spare is forked at start and as soon as a request was handed to the waiting one
    (while that one sets itself up, the runner waits for its answer: the fork is neither
    on the answer's way nor beside the step's start); after a request no spare took, only
    when the next request comes. A zygote the runner replaces after a failed start takes
    its spare with it (the spare's parent-death signal)."""
    control = socket.socket(fileno=_CONTROL)
    # The directory of the cgroup the next spare is born into (the runner's, for the step
    # after the one it last requested; for the first step, the one given at start), while
    # the zygote has one.
    cgroup_fd = _FIRST_CGROUP
    spare = _fork_spare(control, cgroup_fd)
    if spare[0] == 0:
        return spare[3]
    while True:
        try:
            msg, anc, _flags, _addr = control.recvmsg(16, socket.CMSG_SPACE(5 * 4))
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        fds = _descriptors(anc)
        if msg != b"F" or len(fds) not in (4, 5):
            for fd in fds:
                os.close(fd)
            control.send(b"E bad request: %d descriptors" % len(fds))
            continue
        # The next step's cgroup, for the next spare: the current one's is this step's.
        if cgroup_fd is not None:
            os.close(cgroup_fd)
        cgroup_fd = fds.pop() if len(fds) == 5 else None
        # One more spare at most: a request whose spare failed is answered E.
        for _attempt in range(2):
            if spare is None:
                # A spare forked now serves this request: it joins this step's cgroup.
                spare = _fork_spare(control)
                if spare[0] == 0:
                    return spare[3]
            handed = _hand_over(spare, fds)
            pid, _link, ready_r, _ = spare
            spare = None
            if handed:
                break
            os.close(ready_r)
        for fd in fds:
            os.close(fd)
        if not handed:
            control.send(b"E no spare took the request")
            continue
        # The next request's child, forked while this one sets itself up (the runner
        # waits meanwhile: the fork is off the start's answer and the step's go); it
        # joins the next step's cgroup while it waits.
        spare = _fork_spare(control, cgroup_fd, ready_r)
        if spare[0] == 0:
            return spare[3]
        said = _setup_answer(pid, ready_r)
        os.close(ready_r)
        if said != b"OK" and not said.startswith(b"OK shared "):
            control.send(b"E child set-up failed: " + (said or b"it ended"))
            continue
        control.send(b"P %d" % pid + said[2:])
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        control.send(b"S %d" % status)


def _run_child(job):
    """Runs the step's script as `python3 -u -c SCRIPT` would, in this forked child."""
    script = job["script"]
    sys.argv[:] = ["-c"]
    sys.orig_argv[:] = [job["program"], "-u", "-c", script]
    _drop_modules()
    import site
    site.USER_BASE = None
    site.USER_SITE = None
    site.getusersitepackages()
    if "site" not in _BOOT_MODULES:
        del sys.modules["site"]
    main = type(sys)("__main__")
    main.__dict__.update(_BOOT_MAIN)
    if "__annotations__" in _BOOT_MAIN:
        main.__annotations__ = {}
    sys.modules["__main__"] = main
    del job
    try:
        exec(compile(script, "<string>", "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        e = e.with_traceback(tb)
        try:
            sys.excepthook(type(e), e, tb)
        except BaseException as hook_error:
            # What CPython prints when the hook itself fails.
            hook_tb = hook_error.__traceback__.tb_next if hook_error.__traceback__ else None
            hook_error.__suppress_context__ = True
            print("Error in sys.excepthook:", file=sys.stderr)
            sys.__excepthook__(type(hook_error), hook_error.with_traceback(hook_tb), hook_tb)
            print("\nOriginal exception was:", file=sys.stderr)
            sys.__excepthook__(type(e), e, tb)
        if isinstance(e, KeyboardInterrupt):
            sys.stdout.flush()
            _signal(_SIGINT, _SIG_DFL)
            _kill(os.getpid(), _SIGINT)
        raise SystemExit(1)


def _exit_status(e):
    """The status `python3` exits with for the uncaught SystemExit `e`, printing what it
    prints for a code that is not an int."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


_status = 0


def _last_exit():
    """Registered before the script's own `atexit` callbacks, so the interpreter's exit
    runs it last — after joining non-daemon threads and running those callbacks (from C, so
    their tracebacks are a fresh interpreter's). It releases `__main__`'s objects (files
    the script left open are flushed and closed), flushes stdio (status 120 when stdout
    cannot be, as Python does) and ends the process there: tearing down the whole inherited
    heap would cost a forked child several milliseconds of copy-on-write faults for
    nothing."""
    status = _status
    main = sys.modules.get("__main__")
    if main is not None:
        main.__dict__.clear()
    _collect()
    for stream in (sys.stdout, sys.stderr):
        # As Python's own exit: a stream that is closed (or cannot say) is not flushed.
        try:
            closed = stream is None or stream.closed
        except BaseException:
            closed = True
        if closed:
            continue
        try:
            stream.flush()
        except BaseException:
            if stream is sys.stdout:
                status = 120
    try:
        os._exit(status)
    except OverflowError:
        os._exit(255)


_prctl_dumpable(0)
# What start-up left as garbage goes now, before the first freeze keeps it for good.
_collect()
# Only the runner ends the zygote (SIGKILL, or its socket's end); a same-uid step's
# SIGINT or SIGTERM does not.
_signal(_SIGINT, _SIG_IGN)
_signal(_SIGTERM, _SIG_IGN)
_job = _serve()
_register_exit(_last_exit)
try:
    _run_child(_job)
except SystemExit as _e:
    _status = _exit_status(_e)
    raise SystemExit(_status)
