# attack: decorator that inspects fn.__globals__ at definition time
# expect: forbidden

stolen = []


def steal(fn):
    stolen.append(fn.__globals__.get("__builtins__"))
    return fn


@steal
def workflow(ctx):
    leaked = stolen
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
