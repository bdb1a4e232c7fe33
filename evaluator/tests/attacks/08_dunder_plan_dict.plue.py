# attack: Plan.__dict__ to find a Python-level method and follow its __globals__ to os
# expect: forbidden

def workflow(ctx):
    leaked = None
    for name, member in Plan.__dict__.items():
        g = getattr(member, "__globals__", None)
        if g and "os" in g:
            leaked = g["os"].environ.get("PLUE_ATTACK_CANARY")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
