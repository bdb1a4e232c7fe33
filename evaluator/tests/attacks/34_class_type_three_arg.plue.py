# attack: type('X', (Plan,), {}) to create a class without a class statement
# expect: forbidden

def workflow(ctx):
    X = type("X", (Plan,), {"name": "forged"})
    leaked = X
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
