"""Baseline for the evaluator benchmark: evaluate a workflow file in a plain python3 process.

No sandbox, no validation: stand-in Plan/Step/Trigger that record their arguments, the file
exec'd, workflow() called, the result printed as JSON. What one `python3` per file costs.
"""
import json
import sys


class _Recorder:
    def __init__(self, kind, *args, **kwargs):
        self.data = {"kind": kind, "args": list(args), **kwargs}


class Step:
    bash = staticmethod(lambda *a, **k: _Recorder("bash", *a, **k).data)
    python = staticmethod(lambda *a, **k: _Recorder("python", *a, **k).data)
    llm = staticmethod(lambda *a, **k: _Recorder("llm", *a, **k).data)


class Trigger:
    on_push = staticmethod(lambda **k: {"kind": "push", **k})
    on_pull_request = staticmethod(lambda **k: {"kind": "pull_request", **k})
    on_schedule = staticmethod(lambda cron: {"kind": "schedule", "cron": cron})
    manual = staticmethod(lambda **k: {"kind": "manual", **k})


def Plan(**kwargs):
    return kwargs


class _Ctx:
    event, repo, ref, branch, sha, pr, changed_files, inputs = "push", "local/workspace", "refs/heads/main", "main", "0" * 40, None, [], {}


for path in sys.argv[1:]:
    namespace = {"Plan": Plan, "Step": Step, "Trigger": Trigger}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)
    fn = namespace["workflow"]
    plan = fn(_Ctx()) if fn.__code__.co_argcount else fn()
    print(json.dumps(plan, sort_keys=True, default=str))
