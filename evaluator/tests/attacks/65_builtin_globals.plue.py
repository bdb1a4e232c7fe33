# attack: globals()['__builtins__'] to recover the real builtins
# expect: forbidden

def workflow(ctx):
    leaked = globals()["__builtins__"]
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
