# attack: exec() of source that imports os
# expect: forbidden

def workflow(ctx):
    scope = {}
    exec("import os\nleaked = os.environ.get('PLUE_ATTACK_CANARY')", scope)
    leaked = scope["leaked"]
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
