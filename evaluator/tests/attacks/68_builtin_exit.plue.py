# attack: exit(0) to kill the worker before it reports a result
# expect: forbidden

def workflow(ctx):
    exit(0)
    leaked = "unreachable"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
