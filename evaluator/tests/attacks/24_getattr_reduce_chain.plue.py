# attack: functools.reduce(getattr, ['__class__', '__base__', '__subclasses__'], ()) to walk without literal attributes
# expect: forbidden

import functools


def workflow(ctx):
    path = "__class__ __base__ __subclasses__".split()
    leaked = functools.reduce(getattr, path, ())()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
