# attack: reach the real builtins through the __builtins__ global and import os
# expect: forbidden

def workflow(ctx):
    b = __builtins__
    imp = b["__import__"] if isinstance(b, dict) else b.__import__
    leaked = imp("os").system("touch /tmp/plue-attack-pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
