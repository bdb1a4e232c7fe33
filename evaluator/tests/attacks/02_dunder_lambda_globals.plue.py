# attack: read (lambda: 0).__globals__ to recover the real __builtins__ and open a file for writing
# expect: forbidden

def workflow(ctx):
    g = (lambda: 0).__globals__
    real_builtins = g["__builtins__"]
    real_open = real_builtins["open"] if isinstance(real_builtins, dict) else real_builtins.open
    leaked = real_open("/tmp/plue-attack-pwned", "w").write("pwned")
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
