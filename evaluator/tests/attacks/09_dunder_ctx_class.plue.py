# attack: ctx.__class__.__init__.__globals__['__builtins__'] to recover the unrestricted builtins
# expect: forbidden

def workflow(ctx):
    real = ctx.__class__.__init__.__globals__["__builtins__"]
    leaked = real["open"]("/etc/passwd").read()
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
