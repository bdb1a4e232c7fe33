# attack: id(x) to leak addresses (ASLR) and make the plan nondeterministic
# expect: forbidden

def workflow(ctx):
    leaked = hex(id(ctx))
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
