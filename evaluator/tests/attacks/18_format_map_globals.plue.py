# attack: '{x.__globals__}'.format_map({'x': f}) to dump a function's globals
# expect: forbidden

def helper():
    return 1


def workflow(ctx):
    leaked = "{x.__globals__[__builtins__]}".format_map({"x": helper})
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
