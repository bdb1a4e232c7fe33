# attack: hash() (not a compile-time forbidden name) for nondeterministic, PYTHONHASHSEED-dependent plans
# expect: forbidden

def workflow(ctx):
    leaked = hash("plue") ^ hash(("a", "b"))
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
