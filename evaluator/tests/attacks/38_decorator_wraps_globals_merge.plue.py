# attack: functools.update_wrapper(..., updated=('__globals__',)) makes functools' real getattr merge a sandbox function's globals into ours
# expect: error

import functools


def sink():
    return None


def workflow(ctx):
    # update_wrapper does getattr(wrapper, "__globals__").update(getattr(wrapped, "__globals__", {}))
    # using the real getattr, so this would copy the sandbox getattr's module globals into ours.
    functools.update_wrapper(sink, getattr, assigned=(), updated=("__globals__",))
    leaked = builtins.open("/tmp/plue-attack-pwned", "w")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
