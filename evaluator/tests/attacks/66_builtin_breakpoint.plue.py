# attack: breakpoint() to drop into pdb reading commands from the worker's stdin
# expect: forbidden

def workflow(ctx):
    breakpoint()
    leaked = "debugger"
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
